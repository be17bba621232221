"""What several test modules share: event envelopes (``events``), records on a
real broker (``kafka``), workers driven step by step (``workers``), the
product's processes and the people who use them over HTTP (``stack``), the
browser tests' common ground (``browser``), test images (``images``), the
deployment files read as their tools read them (``compose``, ``dockerfile``,
``nginx``, ``readme``), the project run under a given environment
(``environment``) and where the project lives (``project``).

Test modules import from here, never from one another; fixtures live in
``tests/conftest.py`` (and ``tests/deploy/conftest.py``), which build on these.
"""

from __future__ import annotations
