"""The loops and tools people run with ``manage.py``: the whole stack (``runstack``),
the web tier (``runweb``), the workers (``run_analytics``, ``run_notifications``),
the outbox relay, and the operators' tools (dead letters, pruning, the event tail)."""
