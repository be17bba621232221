"""Settings for the naive fan-out baseline: the product's, with a channel layer big enough.

The in-memory layer's default capacity (100 messages per channel) silently
drops messages under a burst; the baseline must lose nothing, so that it is
measured at its best.
"""

from __future__ import annotations

from eventsite.settings import *  # noqa: F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"capacity": 100_000},
    }
}
