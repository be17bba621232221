"""The Dockerfile and .dockerignore: a slim image that installs the runtime
dependencies only and runs as a user, a build context without secrets or local
data, and official, pinned base images (tests/support/dockerfile.py reads
them)."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from tests.support.dockerfile import dockerfile_stages, dockerignore_patterns


def test_the_image_installs_runtime_dependencies_only_and_runs_as_a_user() -> None:
    stages = dockerfile_stages()
    app = stages["app"]
    assert app.base.startswith("python:3.12") and "slim" in app.base
    assert app.user not in ("root", "0", "")
    installs = [command for _, command in app.runs if "pip install" in command]
    assert installs and all("requirements.txt" in command for command in installs)
    copied = [source for _, sources, _ in app.copies for source in sources]
    assert not [text for text in copied + installs if "requirements-dev" in text]


def test_the_build_context_leaves_out_secrets_and_local_data_but_not_the_project() -> None:
    patterns = dockerignore_patterns()
    assert not any(pattern.startswith("!") for pattern in patterns)

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern.removeprefix("**/")) for pattern in patterns)

    for path in (".env", ".venv", "var", ".git", "test-artifacts", "node_modules"):
        assert ignored(path), f"{path} would be sent into the image"
    needed = {"manage.py", "requirements.txt", "eventsite", "monitor", "static", "templates"}
    for _, sources, _ in dockerfile_stages()["proxy"].copies + dockerfile_stages()["app"].copies:
        needed.update(source.split("/")[0] for source in sources if not source.startswith("/"))
    needed.discard(".")
    assert not [path for path in needed if ignored(path)]


def test_images_are_official_and_pinned(compose: dict[str, Any]) -> None:
    built = {d["image"] for d in compose["services"].values() if "build" in d}
    pulled = {d["image"] for d in compose["services"].values() if "build" not in d}
    pulled |= {stage.base for stage in dockerfile_stages().values()}
    pulled -= set(dockerfile_stages())  # FROM an earlier stage
    assert {image.split(":")[0] for image in pulled} == {
        "apache/kafka",
        "postgres",
        "nginx",
        "python",
    }
    for image in pulled - built:
        tag = image.partition(":")[2]
        assert re.match(r"\d+\.\d+(\.\d+)?(-[a-z0-9.-]+)?$", tag), f"{image} is not pinned"
