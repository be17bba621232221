"""Two changes to aiokafka that eventsite's guarantees rest on.

aiokafka has no setting for either, so :func:`apply` changes the library's
own methods; :mod:`monitor.kafka.clients`, where every client eventsite makes
comes from, applies them when it is imported. Applying them again changes
nothing.

- Topics are never auto-created (:func:`disable_topic_auto_creation`).
- Each client keeps the cluster id of the broker's latest metadata answer
  (:func:`remember_cluster_id`), read back with :func:`cluster_id_of`.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol import metadata

logger = logging.getLogger(__name__)

# Set on a replacement method, so that it is not wrapped twice.
PATCHED_MARK = "_eventsite_patched"
# Where a client's ClusterMetadata keeps the cluster id it was last told.
CLUSTER_ID_ATTRIBUTE = "eventsite_cluster_id"


def apply() -> None:
    """Apply both changes (idempotent)."""
    disable_topic_auto_creation()
    remember_cluster_id()


def cluster_id_of(cluster: Any) -> str | None:
    """The cluster id a ClusterMetadata last received (None before the first answer
    that carried one)."""
    value = getattr(cluster, CLUSTER_ID_ATTRIBUTE, None)
    return value if isinstance(value, str) else None


def disable_topic_auto_creation() -> None:
    """Make every metadata request say ``allow_auto_topic_creation=False``.

    aiokafka always asks the broker to create a topic it does not know. After
    a broker restarts empty, a producer retrying a send would then create
    ``user-events`` with the broker's default partitions, racing the explicit
    creation in :func:`~monitor.kafka.clients.ensure_topics`; on the embedded
    broker the loser of that race silently replaces the topic, acknowledged
    records included. Topics are therefore created only explicitly; a send to
    a missing topic fails and its event stays in the outbox until the topic
    is back.
    """
    original = metadata.MetadataRequest.__init__
    if "allow_auto_topic_creation" not in inspect.signature(original).parameters:
        logger.warning("cannot turn off topic auto-creation in this aiokafka version")
        return
    if getattr(original, PATCHED_MARK, False):
        return

    def __init__(self: Any, topics: Any = None, allow_auto_topic_creation: bool = False) -> None:
        original(self, topics, allow_auto_topic_creation)

    setattr(__init__, PATCHED_MARK, True)
    metadata.MetadataRequest.__init__ = __init__


def remember_cluster_id() -> None:
    """Keep the cluster id of each metadata response on the client's metadata.

    aiokafka reads ``cluster_id`` off the wire but drops it. A broker that
    restarts empty (the embedded broker keeps nothing) comes back with a new
    cluster id, and its logs start again at offset 0: consumer positions from
    before are meaningless there. Keeping the id lets a consumer notice.
    """
    original = ClusterMetadata.update_metadata
    if getattr(original, PATCHED_MARK, False):
        return

    def update_metadata(self: Any, response: Any) -> Any:
        result = original(self, response)
        if getattr(response, "cluster_id", None):
            setattr(self, CLUSTER_ID_ATTRIBUTE, response.cluster_id)
        return result

    setattr(update_metadata, PATCHED_MARK, True)
    ClusterMetadata.update_metadata = update_metadata
