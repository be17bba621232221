"""The Dockerfile and .dockerignore read as Docker reads them: build stages
with the environment, user, working directory, RUN, COPY and CMD of each, and
the build context's ignore patterns.

Enough of the Dockerfile grammar for this project's file: continuation lines,
comments, ``FROM ... AS``, both ``ENV`` forms, ``COPY --from``, and ``CMD``
in exec or shell form. An instruction before the first FROM fails the test."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tests.support.compose import environment, service
from tests.support.project import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    """One build stage, as its last instruction leaves it."""

    base: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    # Each RUN with the environment it runs in.
    runs: list[tuple[dict[str, str], str]] = field(default_factory=list)
    # COPY: (--from stage or None, sources, destination).
    copies: list[tuple[str | None, list[str], str]] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    def apply(self, instruction: str, arguments: str) -> None:
        """Take in one instruction of this stage (other than FROM)."""
        if instruction == "ENV":
            words = shlex.split(arguments)
            if all("=" in word for word in words):
                for word in words:
                    name, _, value = word.partition("=")
                    self.env[name] = value
            else:
                self.env[words[0]] = " ".join(words[1:])
        elif instruction == "WORKDIR":
            self.workdir = arguments
        elif instruction == "USER":
            self.user = arguments
        elif instruction == "RUN":
            self.runs.append((dict(self.env), arguments))
        elif instruction == "COPY":
            words = shlex.split(arguments)
            flags = {w[2:].split("=", 1)[0]: w.split("=", 1)[-1] for w in words if w[:2] == "--"}
            paths = [word for word in words if not word.startswith("--")]
            self.copies.append((flags.get("from"), paths[:-1], paths[-1]))
        elif instruction == "CMD":
            self.cmd = (
                json.loads(arguments) if arguments.startswith("[") else ["sh", "-c", arguments]
            )


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        instruction, _, arguments = whole.partition(" ")
        yield instruction.upper(), arguments.strip()


@cache
def dockerfile_stages() -> dict[str, Stage]:
    """{stage name (or base image when unnamed): Stage}, in the file's order."""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for instruction, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction == "FROM":
            words = arguments.split()
            stage = Stage(base=words[0])
            stages[words[2] if len(words) > 2 and words[1].upper() == "AS" else words[0]] = stage
            continue
        assert stage is not None, f"{instruction} before FROM"
        stage.apply(instruction, arguments)
    return stages


def app_stage(compose: dict[str, Any]) -> Stage:
    """The stage the web service is built from."""
    target = service(compose, "web")["build"]["target"]
    return dockerfile_stages()[target]


def container_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    """What a process of service ``name`` sees: the image's ENV, then the service's."""
    definition = service(compose, name)
    image_env = dockerfile_stages()[definition["build"]["target"]].env
    return {**image_env, **environment(definition)}


def dockerignore_patterns() -> list[str]:
    """The patterns of .dockerignore, without blank and comment lines."""
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
