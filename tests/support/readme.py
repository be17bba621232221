"""The README read as the deployment tests read it: the "## Run at scale"
section and its table of variables and their defaults."""

from __future__ import annotations

import re

from tests.support.project import ROOT


def run_at_scale_section() -> str:
    """The text of the README's "## Run at scale" section, up to the next one."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Run at scale\n(.*?)(?=^## )", readme + "\n## ", re.S | re.M)
    assert match, 'README.md has no "## Run at scale" section'
    return match.group(1)


def defaults_table(section: str) -> dict[str, str]:
    """{variable: its default cell} from the table rows of ``section`` (a row may
    name several variables, `A`, `B`, with their defaults in order)."""
    rows = {}
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            for name in re.findall(r"`(\w+)`", cells[0]):
                rows[name] = cells[1] if len(cells) > 1 else ""
    return rows
