"""Where the project lives: ``ROOT`` is the checkout's top directory (the one
with ``manage.py``), the working directory of every process the tests start."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
