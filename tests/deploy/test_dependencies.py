"""The packaging states the dependencies' minimums, and what runs meets them."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement

from tests.support.project import ROOT

# For each, the release with the security fixes published so far, and the one before.
SECURITY_MINIMUMS = {
    "django": ("5.2.19", "5.2.18"),
    "daphne": ("4.2.3", "4.2.2"),
    "pillow": ("13.0.0", "12.3.0"),
}


def requirements_txt() -> dict[str, Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    found = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    return {requirement.name.lower(): requirement for requirement in found}


def test_pyproject_and_requirements_state_the_same_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    stated = {
        Requirement(text).name.lower(): str(Requirement(text)) for text in project["dependencies"]
    }
    assert stated == {name: str(req) for name, req in requirements_txt().items()}


def test_the_minimums_exclude_releases_without_the_security_fixes() -> None:
    requirements = requirements_txt()
    for name, (fixed, before) in SECURITY_MINIMUMS.items():
        assert requirements[name].specifier.contains(fixed), name
        assert not requirements[name].specifier.contains(before), f"{name} {before} is allowed"


def test_what_is_installed_meets_the_minimums() -> None:
    for name, requirement in requirements_txt().items():
        assert requirement.specifier.contains(version(name), prereleases=True), name
