"""The front-end libraries committed under static/vendor/ match package-lock.json."""

from __future__ import annotations

import json
import re

from tests.support.project import ROOT

VENDOR = ROOT / "static" / "vendor"


def locked_version(package: str) -> str:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    return lock["packages"][f"node_modules/{package}"]["version"]


def test_it_pins_uplot_exactly() -> None:
    manifest = json.loads((ROOT / "package.json").read_text())
    assert manifest["private"] is True
    pinned = manifest["devDependencies"]["uplot"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), f"pin uplot exactly, not {pinned!r}"
    assert pinned == locked_version("uplot")


def test_the_vendored_uplot_is_the_locked_version() -> None:
    script = (VENDOR / "uplot" / "uPlot.iife.min.js").read_text()
    banner = re.match(r"/\*! https://github.com/leeoniya/uPlot \(v([\d.]+)\) \*/", script)
    assert banner is not None, "uPlot.iife.min.js lost its version banner"
    assert banner.group(1) == locked_version("uplot"), "run `make vendor` and commit the result"
    assert (VENDOR / "uplot" / "uPlot.min.css").read_text().startswith(".uplot")
    assert "MIT License" in (VENDOR / "uplot" / "LICENSE").read_text()
