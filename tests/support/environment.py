"""The project run as a container runs it: a process with exactly a given
environment (plus this machine's own, non-project variables), the settings it
resolves, the variables the code reads, and what manage.py accepts.

Each ``run`` is a new Python process in the project's directory, so settings
are loaded afresh, as they are in a container; nothing here changes this
process's settings."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from django.conf import ENVIRONMENT_VARIABLE
from django.core.management import get_commands, load_command_class

from tests.support.dockerfile import container_env
from tests.support.project import ROOT

# Variable prefixes of this project; the rest of a test's environment is passed on.
OWN_PREFIXES = ("DJANGO_", "EVENTSITE_", "KAFKA_", "DATABASE_", "POSTGRES_")

# The settings the deployment tests compare with the deployment files.
APP_SETTINGS = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_EVENTS_TOPIC",
    "KAFKA_DLQ_TOPIC",
    "KAFKA_TOPIC_PARTITIONS",
    "KAFKA_TOPIC_REPLICATION",
    "KAFKA_ENABLE_IDEMPOTENCE",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_MAX_FETCH_BYTES",
    "MAX_EVENT_BYTES",
    "DLQ_MAX_RECORD_BYTES",
    "MAX_PHOTO_BYTES",
    "STATIC_URL",
    "STATIC_ROOT",
    "MEDIA_URL",
    "MEDIA_ROOT",
    "SERVE_FILES",
    "TRUSTED_PROXIES",
    "SECURE_PROXY_SSL_HEADER",
    "WS_PING_SECONDS",
    "WS_PING_TIMEOUT_SECONDS",
    "WEB_PROCESSES",
    "WEB_THREADS",
    "DATABASES",
)


def clean_env(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the project's variables, plus ``env``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
    return {**kept, **env}


def run(
    args: list[str], env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python args...`` in the project's directory with ``clean_env(env)``;
    its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SHOW_SETTINGS = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")  # as manage.py does
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in sys.argv[1:]}, default=str))
"""


def load_settings(env: Mapping[str, str], *names: str) -> dict[str, Any]:
    """The settings ``names`` as a process with environment ``env`` resolves them."""
    result = run(["-c", SHOW_SETTINGS, *names], env)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def settings_per_service(
    compose: dict[str, Any], services: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Per service, APP_SETTINGS as its processes resolve them (one load per
    distinct environment)."""
    loaded: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}
    result = {}
    for name in services:
        env = container_env(compose, name)
        key = frozenset(env.items())
        if key not in loaded:
            loaded[key] = load_settings(env, *APP_SETTINGS)
        result[name] = loaded[key]
    return result


# Loads the settings once per variant of the environment (given as JSON on stdin)
# in one process, and says for each what stops it: the settings refusing to load,
# or a deploy check at WARNING or above. Much cheaper than a process per variant;
# the variables found are then confirmed one process each.
DEPLOY_VARIANTS = """
import json, os, sys
from django.core.exceptions import ImproperlyConfigured
variants = json.load(sys.stdin)
os.environ.clear(); os.environ.update(variants[0])
import django
django.setup()
from django.conf import settings
from django.core import checks
from django.utils.functional import empty
verdicts = []
for variant in variants:
    os.environ.clear(); os.environ.update(variant)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")  # as manage.py does
    for module in ("eventsite.production", "eventsite.settings"):
        sys.modules.pop(module, None)
    settings._wrapped = empty
    try:
        settings._setup()
    except ImproperlyConfigured as exc:
        verdicts.append(f"refused: {exc}")
        continue
    found = checks.run_checks(include_deployment_checks=True)
    verdicts.append("; ".join(m.id for m in found if m.level >= checks.WARNING))
print(json.dumps(verdicts))
"""


def variables_the_settings_require(env: dict[str, str]) -> dict[str, str]:
    """Each variable of ``env`` without which the settings refuse to load or the deploy
    check warns, with what goes wrong; ``env`` as a whole must pass."""
    names = sorted(env)
    variants = [clean_env(env)] + [
        clean_env({k: v for k, v in env.items() if k != n}) for n in names
    ]
    result = subprocess.run(
        [sys.executable, "-c", DEPLOY_VARIANTS],
        cwd=ROOT,
        input=json.dumps(variants),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    full, *without = json.loads(result.stdout.strip().splitlines()[-1])
    assert full == "", f"the whole environment fails: {full}"
    return {name: verdict for name, verdict in zip(names, without, strict=True) if verdict}


READERS = ("os.getenv", "os.environ.get", "os.environ.setdefault")


def settings_variables() -> set[str]:
    """Every environment variable the project's code reads, found in its source:
    ``os.getenv("X")``, ``os.environ["X"]``, ``os.environ.get("X")`` and the settings'
    ``env*("X", ...)`` helpers; plus the one Django itself reads."""
    names: set[str] = {ENVIRONMENT_VARIABLE}
    files = [*ROOT.glob("eventsite/**/*.py"), *ROOT.glob("monitor/**/*.py")]
    for path in files:
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            argument: ast.expr | None = None
            if isinstance(node, ast.Call) and node.args:
                func = ast.unparse(node.func)
                if func in READERS or re.fullmatch(r"env[a-z]+", func):
                    argument = node.args[0]
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                argument = node.slice
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                names.add(argument.value)
    return names


def check_manage_py(argv: list[str]) -> Any:
    """The options ``argv`` (``python manage.py NAME ...``) parses to, by the command's
    own parser; CommandError if the command or an option does not exist."""
    assert argv[:2] == ["python", "manage.py"], argv
    name, args = argv[2], argv[3:]
    commands = get_commands()
    assert name in commands, f"manage.py has no command {name!r}"
    return (
        load_command_class(commands[name], name).create_parser("manage.py", name).parse_args(args)
    )
