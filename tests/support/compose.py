"""docker-compose.yml read as Compose reads it: YAML (by PyYAML), with every
string value interpolated from an env file's variables by Compose's documented
rules, and the accessors the deployment tests use on a service's definition.

``load_compose`` raises MissingVariable where Compose would refuse to start.
Interpolation never looks at this process's environment, only at the ``env``
it is given, so a test states exactly what an operator's ``.env`` holds."""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.project import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"

# What an operator puts in .env (deploy/env.example): everything else has a default.
DOT_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DJANGO_ALLOWED_HOSTS": "events.example.com",
    "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
}
APP_SERVICES = ("migrate", "web", "analytics", "notifications", "relay")
ONE_SHOT_CONDITION = "service_completed_successfully"


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is missing: Compose refuses to start."""


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(text: str, env: Mapping[str, str], used: set[str] | None = None) -> str:
    """``text`` as Compose interpolates it with ``env`` (the documented syntax:
    ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``, nested).
    Every variable looked up is added to ``used``."""
    value, _ = _interpolate(text, 0, env, set() if used is None else used, inside=False)
    return value


def _interpolate(
    text: str, i: int, env: Mapping[str, str], used: set[str], *, inside: bool
) -> tuple[str, int]:
    """From ``text[i:]``: the interpolated text up to the end, or (``inside``
    braces) up to the closing ``}``, and the index where it stopped."""
    out: list[str] = []
    while i < len(text):
        char = text[i]
        if inside and char == "}":
            return "".join(out), i
        if char != "$":
            out.append(char)
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            value, i = _braced(text, i + 2, env, used)
            out.append(value)
        elif match := NAME.match(text, i + 1):
            used.add(match.group())
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append(char)
            i += 1
    if inside:
        raise ValueError(f"unclosed ${{ in {text!r}")
    return "".join(out), i


def _braced(text: str, i: int, env: Mapping[str, str], used: set[str]) -> tuple[str, int]:
    """The value of the ``${...}`` whose name starts at ``text[i]``, and the
    index just past its ``}``."""
    match = NAME.match(text, i)
    if not match:
        raise ValueError(f"bad variable at {text[i - 2 :]!r}")
    name, i = match.group(), match.end()
    used.add(name)
    operator = next((op for op in OPERATORS if text.startswith(op, i)), None)
    if operator is None:
        if not text.startswith("}", i):
            raise ValueError(f"bad variable at {text[i:]!r}")
        return env.get(name, ""), i + 1
    operand, i = _interpolate(text, i + len(operator), env, used, inside=True)
    value = env.get(name)
    # The colon forms treat an empty variable as missing.
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("-"):
        return (value if present and value is not None else operand), i + 1
    if operator.endswith("?"):
        if not present or value is None:
            raise MissingVariable(f"{name}: {operand}")
        return value, i + 1
    return (operand if present else ""), i + 1


def resolve(node: Any, env: Mapping[str, str], used: set[str]) -> Any:
    """A loaded Compose document with every string value interpolated (keys are not)."""
    if isinstance(node, dict):
        return {key: resolve(value, env, used) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, env, used) for item in node]
    if isinstance(node, str):
        return interpolate(node, env, used)
    return node


def raw_compose() -> dict[str, Any]:
    """docker-compose.yml as written, before interpolation."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def load_compose(env: Mapping[str, str], used: set[str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with the env file ``env``; the
    variables it refers to are added to ``used``."""
    resolved: dict[str, Any] = resolve(raw_compose(), env, set() if used is None else used)
    return resolved


def read_env_file(path: Path) -> dict[str, str]:
    """{NAME: value} of an env file's ``NAME=value`` lines; blank and ``#``
    lines are skipped, and any other line fails the test."""
    variables = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, equals, value = line.partition("=")
        assert equals, f"{path.name}: {line!r} is not NAME=value"
        variables[name] = value
    return variables


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    """The definition of service ``name``; fails the test if there is none."""
    assert name in compose["services"], f"docker-compose.yml has no service {name!r}"
    definition: dict[str, Any] = compose["services"][name]
    return definition


def environment(definition: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment``, in either of Compose's two forms, as strings."""
    raw = definition.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {
        key: "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in raw.items()
    }


def command(definition: dict[str, Any], key: str = "command") -> list[str]:
    """A service's ``command`` (or ``key``) as an argument list, split as a
    shell would split the string form."""
    raw = definition.get(key) or []
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def healthcheck_command(definition: dict[str, Any]) -> list[str]:
    """A service's health check test, its first word ``CMD`` or ``CMD-SHELL``."""
    test = definition["healthcheck"]["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(part) for part in test]


def replicas(definition: dict[str, Any]) -> int:
    return int((definition.get("deploy") or {}).get("replicas", 1))


def depends_on(definition: dict[str, Any]) -> dict[str, Any]:
    """{service: its condition block, or None in the short list form}."""
    raw = definition.get("depends_on") or {}
    return {name: None for name in raw} if isinstance(raw, list) else dict(raw)


def one_shot_services(compose: dict[str, Any]) -> set[str]:
    """Services some other one waits for to complete (rather than to be healthy)."""
    return {
        target
        for definition in compose["services"].values()
        for target, condition in depends_on(definition).items()
        if (condition or {}).get("condition") == ONE_SHOT_CONDITION
    }


def names_of(compose: dict[str, Any], name: str) -> set[str]:
    """The names by which other containers reach service ``name``."""
    definition = service(compose, name)
    names = {name, definition.get("hostname", name)}
    networks = definition.get("networks") or {}
    if isinstance(networks, dict):
        for network in networks.values():
            names.update((network or {}).get("aliases") or [])
    return names


def networks_of(definition: dict[str, Any]) -> set[str]:
    return set(definition.get("networks") or ["default"])


# --- The kafka and kafka-init services ---------------------------------------------


def kafka_settings(definition: dict[str, Any]) -> dict[str, str]:
    """The ``KAFKA_*`` variables of a service's environment."""
    return {k: v for k, v in environment(definition).items() if k.startswith("KAFKA_")}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {NAME: (host, port)}."""
    result = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


def kafka_topics_calls(compose: dict[str, Any]) -> list[dict[str, str]]:
    """The options ({"--topic": name, ...}) of each ``kafka-topics.sh --create``
    that kafka-init's script runs, in order."""
    script = command(service(compose, "kafka-init"))[-1]
    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if words and words[0].endswith("/kafka-topics.sh") and "--create" in words:
            options = {}
            for i, word in enumerate(words):
                if (
                    word.startswith("--")
                    and i + 1 < len(words)
                    and not words[i + 1].startswith("--")
                ):
                    options[word] = words[i + 1]
            calls.append(options)
    return calls
