"""The embedded broker's lives, and the bases that keep stream positions growing.

Each life of the embedded broker is a :class:`~monitor.models.BrokerEpoch`:

- :func:`begin_epoch` records a roll-over, before the new cluster takes its
  first record: its bases are the old ones plus the old cluster's exact ends;
- :func:`begin_after_restart` records a broker started afresh (``make run``
  again, or the broker restarted after it died): its bases go on from the
  ends the last life recorded (:func:`record_ends`), and, if that life did
  not end cleanly (its last records are not known), past any position it
  may have handed out, with the positions below marked as not exact;
- :func:`epoch_of` reads a cluster's bases back for a reader
  (:func:`follow_cluster`, :mod:`monitor.kafka.shift`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.db import transaction

from monitor.kafka.clients import ClusterWatch
from monitor.kafka.shift import ShiftedConsumer
from monitor.models import BrokerEpoch

Offsets = dict[str, dict[int, int]]

# After a life that ended without saying where, how far past its last
# recorded ends the next one starts: more than it can have written since.
UNCLEAN_MARGIN = 1_000_000


@dataclass(frozen=True)
class Epoch:
    """A cluster's bases, and per partition the position from which the records
    below the bases are counted exactly (see :meth:`counted_exactly`)."""

    bases: Offsets = field(default_factory=dict)
    exact_from: Offsets = field(default_factory=dict)

    def counted_exactly(self, topic: str, partition: int, position: int) -> bool:
        """Whether the records from ``position`` up to the base are known by number."""
        return position >= self.exact_from.get(topic, {}).get(partition, 0)


def _offsets(stored: Mapping[str, Mapping[str, int]]) -> Offsets:
    return {t: {int(p): int(o) for p, o in parts.items()} for t, parts in stored.items()}


def _stored(offsets: Mapping[str, Mapping[int, int]]) -> dict[str, dict[str, int]]:
    return {t: {str(p): o for p, o in parts.items()} for t, parts in offsets.items()}


def _added(first: Offsets, second: Mapping[str, Mapping[int, int]], extra: int = 0) -> Offsets:
    """Per topic and partition, ``first + second + extra`` (missing counts 0)."""
    topics = set(first) | set(second)
    return {
        topic: {
            p: first.get(topic, {}).get(p, 0) + second.get(topic, {}).get(p, 0) + extra
            for p in set(first.get(topic, {})) | set(second.get(topic, {}))
        }
        for topic in topics
    }


def epoch_of(cluster_id: str | None) -> Epoch:
    """The epoch of ``cluster_id`` (bases of 0 for a cluster with none: Apache Kafka)."""
    row = BrokerEpoch.objects.filter(cluster_id=cluster_id).first() if cluster_id else None
    if row is None:
        return Epoch()
    return Epoch(_offsets(row.bases), _offsets(row.exact_from))


def bases_of(cluster_id: str | None) -> Offsets:
    return epoch_of(cluster_id).bases


def follows(cluster_id: str | None, before: str | None) -> bool:
    """Whether ``cluster_id`` is a roll-over of ``before``: its positions continue it."""
    if cluster_id is None or before is None:
        return False
    return BrokerEpoch.objects.filter(cluster_id=cluster_id, follows=before).exists()


def begin_epoch(
    cluster_id: str, follows: str | None, ends: Mapping[str, Mapping[int, int]]
) -> Offsets:
    """Record the roll-over of ``follows`` (whose own offsets ended exactly at
    ``ends``) to ``cluster_id``; returns the new bases."""
    with transaction.atomic():
        before = BrokerEpoch.objects.select_for_update().filter(cluster_id=follows or "").first()
        old = (
            Epoch()
            if before is None
            else Epoch(_offsets(before.bases), _offsets(before.exact_from))
        )
        bases = _added(old.bases, ends)
        if before is not None:
            before.ends, before.ended_cleanly = _stored(ends), True
            before.save(update_fields=["ends", "ended_cleanly"])
        BrokerEpoch.objects.update_or_create(
            cluster_id=cluster_id,
            defaults={
                "follows": follows or "",
                "bases": _stored(bases),
                "exact_from": _stored(old.exact_from),
            },
        )
    return bases


def begin_after_restart(cluster_id: str) -> Offsets:
    """Record ``cluster_id``, a broker started afresh, going on from the last
    life's recorded ends; returns its bases."""
    with transaction.atomic():
        last = BrokerEpoch.objects.select_for_update().order_by("-started_at", "-id").first()
        bases: Offsets = {}
        exact_from: Offsets = {}
        if last is not None and last.ended_cleanly:
            bases = _added(_offsets(last.bases), _offsets(last.ends))
            exact_from = _offsets(last.exact_from)
        elif last is not None:  # its last records are not known: nothing below is counted
            bases = exact_from = _added(_offsets(last.bases), _offsets(last.ends), UNCLEAN_MARGIN)
        BrokerEpoch.objects.update_or_create(
            cluster_id=cluster_id,
            defaults={"follows": "", "bases": _stored(bases), "exact_from": _stored(exact_from)},
        )
    return bases


def record_ends(cluster_id: str, ends: Mapping[str, Mapping[int, int]], *, final: bool) -> None:
    """Record the broker's own ends as last seen; ``final``: it takes no more."""
    BrokerEpoch.objects.filter(cluster_id=cluster_id).update(
        ends=_stored(ends), ended_cleanly=final
    )


async def follow_cluster(consumer: ShiftedConsumer, watch: ClusterWatch) -> Epoch:
    """Have ``consumer`` use the bases of the cluster ``watch`` last saw; returns its epoch."""
    epoch: Epoch = await database_sync_to_async(epoch_of)(watch.cluster_id)
    consumer.shift_to(epoch.bases)
    return epoch
