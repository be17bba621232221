"""The README's table of event types is the code's: every type, its required
data fields in order, and whether the public feed shows it."""

from __future__ import annotations

import re

from monitor.events.event_types import DATA_FIELDS, PUBLIC_TYPES
from tests.support.project import ROOT

ROW = re.compile(r"^\| `(?P<type>[a-z_.]+)` \| (?P<fields>[^|]+) \| (?P<public>yes|no) \|$")


def test_the_readme_lists_every_event_type_with_its_fields() -> None:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            fields = re.findall(r"`([a-z_]+)`", match["fields"])
            rows[match["type"]] = (fields, match["public"] == "yes")
    expected = {name: (list(fields), name in PUBLIC_TYPES) for name, fields in DATA_FIELDS.items()}
    assert rows == expected
