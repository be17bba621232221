"""The production deployment (docker-compose.yml, Dockerfile, deploy/) against the code.

Docker does not run here, so the files are read and checked against what they
start: each Django service's environment is resolved as Compose would resolve
it and the production settings are loaded with it; every command is parsed by
the command's own parser; the Kafka listeners, topics and limits are compared
with what the settings tell the clients; the nginx configuration is compared
with the site's own rules for media, static files and WebSockets.
"""

from __future__ import annotations

import ast
import fnmatch
import http.server
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import dj_database_url
import httpx
import pytest
import yaml
from django.conf import ENVIRONMENT_VARIABLE
from django.core.management import get_commands, load_command_class
from django.test import Client
from websockets.sync.client import connect as ws_connect

from deploy import healthcheck
from eventsite.media import MEDIA_HEADERS, MEDIA_TYPES
from monitor.live.routing import websocket_urlpatterns
from monitor.management.processes import stop_processes
from monitor.security.tokens import token_create
from tests.conftest import Stack, jpeg_bytes

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"

# What an operator puts in .env (deploy/env.example): everything else has a default.
DOT_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DJANGO_ALLOWED_HOSTS": "events.example.com",
    "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
}
APP_SERVICES = ("migrate", "web", "analytics", "notifications", "relay")
ONE_SHOT_CONDITION = "service_completed_successfully"
# Variable prefixes of this project; the rest of a test's environment is passed on.
OWN_PREFIXES = ("DJANGO_", "EVENTSITE_", "KAFKA_", "DATABASE_", "POSTGRES_")


# --- Compose interpolation -------------------------------------------------------


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


def load_compose(env: Mapping[str, str], used: set[str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return resolve(raw, env, set() if used is None else used)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(DOT_ENV)


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in compose["services"], f"docker-compose.yml has no service {name!r}"
    return compose["services"][name]


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
    raw = definition.get(key) or []
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def healthcheck_command(definition: dict[str, Any]) -> list[str]:
    test = definition["healthcheck"]["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(part) for part in test]


def replicas(definition: dict[str, Any]) -> int:
    return int((definition.get("deploy") or {}).get("replicas", 1))


def depends_on(definition: dict[str, Any]) -> dict[str, Any]:
    raw = definition.get("depends_on") or {}
    return {name: None for name in raw} if isinstance(raw, list) else dict(raw)


def kafka_settings(definition: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in environment(definition).items() if k.startswith("KAFKA_")}


# --- The Dockerfile ----------------------------------------------------------------


@dataclass
class Stage:
    base: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    # Each RUN with the environment it runs in.
    runs: list[tuple[dict[str, str], str]] = field(default_factory=list)
    # COPY: (--from stage or None, sources, destination).
    copies: list[tuple[str | None, list[str], str]] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


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
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for instruction, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction == "FROM":
            words = arguments.split()
            stage = Stage(base=words[0])
            stages[words[2] if len(words) > 2 and words[1].upper() == "AS" else words[0]] = stage
            continue
        assert stage is not None, f"{instruction} before FROM"
        if instruction == "ENV":
            words = shlex.split(arguments)
            if all("=" in word for word in words):
                stage.env.update(word.split("=", 1) for word in words)
            else:
                stage.env[words[0]] = " ".join(words[1:])
        elif instruction == "WORKDIR":
            stage.workdir = arguments
        elif instruction == "USER":
            stage.user = arguments
        elif instruction == "RUN":
            stage.runs.append((dict(stage.env), arguments))
        elif instruction == "COPY":
            words = shlex.split(arguments)
            flags = {w[2:].split("=", 1)[0]: w.split("=", 1)[-1] for w in words if w[:2] == "--"}
            paths = [word for word in words if not word.startswith("--")]
            stage.copies.append((flags.get("from"), paths[:-1], paths[-1]))
        elif instruction == "CMD":
            stage.cmd = (
                json.loads(arguments) if arguments.startswith("[") else ["sh", "-c", arguments]
            )
    return stages


def app_stage(compose: dict[str, Any]) -> Stage:
    target = service(compose, "web")["build"]["target"]
    return dockerfile_stages()[target]


def container_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    """What a process of service ``name`` sees: the image's ENV, then the service's."""
    definition = service(compose, name)
    image_env = dockerfile_stages()[definition["build"]["target"]].env
    return {**image_env, **environment(definition)}


# --- Running the project with an environment -------------------------------------


def clean_env(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the project's variables, plus ``env``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
    return {**kept, **env}


def run(
    args: list[str], env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess:
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
    return json.loads(result.stdout.strip().splitlines()[-1])


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


@pytest.fixture(scope="module")
def app_settings(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per app service, its settings as its processes resolve them (one load per
    distinct environment)."""
    loaded: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}
    result = {}
    for name in APP_SERVICES:
        env = container_env(compose, name)
        key = frozenset(env.items())
        if key not in loaded:
            loaded[key] = load_settings(env, *APP_SETTINGS)
        result[name] = loaded[key]
    return result


# --- The services and their settings -----------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_django_service_runs_the_production_settings_and_passes_the_deploy_check(
    compose: dict[str, Any], name: str
) -> None:
    env = container_env(compose, name)
    assert env.get(ENVIRONMENT_VARIABLE) == "eventsite.production"
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


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


def test_each_variable_the_production_settings_require_is_set_and_compose_insists_on_it(
    compose: dict[str, Any],
) -> None:
    env = container_env(compose, "web")
    required = variables_the_settings_require(env)
    # What eventsite/production.py documents as required, found by taking each away.
    assert {ENVIRONMENT_VARIABLE, "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"} <= set(required)
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["x-eventsite-environment"]
    for name in required:
        without = {k: v for k, v in env.items() if k != name}
        refused = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], without)
        assert refused.returncode != 0, f"check --deploy passes without {name}"
        # Compose must refuse to start rather than pass such a variable on empty.
        referenced: set[str] = set()
        interpolate(str(raw.get(name, "")), DOT_ENV, referenced)
        for variable in referenced:
            partial = {k: v for k, v in DOT_ENV.items() if k != variable}
            with pytest.raises(MissingVariable):
                interpolate(str(raw.get(name, "")), partial)


def test_compose_refuses_to_start_with_the_example_env_until_it_is_filled_in() -> None:
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert example == dict.fromkeys(DOT_ENV, "")
    for name in example:
        with pytest.raises(MissingVariable, match=name):
            load_compose({**DOT_ENV, name: ""})
    used: set[str] = set()
    load_compose(DOT_ENV, used)
    commented = set(re.findall(r"^# ([A-Z_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert commented <= used, f"deploy/env.example names unknown variables {commented - used}"


READERS = ("os.getenv", "os.environ.get", "os.environ.setdefault")


def settings_variables() -> set[str]:
    """Every environment variable the project's code reads, found in its source:
    ``os.getenv("X")``, ``os.environ["X"]``, ``os.environ.get("X")`` and the settings'
    ``env*("X", ...)`` helpers; plus the one Django itself reads."""
    names = {ENVIRONMENT_VARIABLE}
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


def test_every_variable_given_to_the_app_is_one_the_code_reads() -> None:
    read = settings_variables()
    assert {"DJANGO_SECRET_KEY", "KAFKA_BOOTSTRAP_SERVERS", "EVENTSITE_TRUSTED_PROXIES"} <= read
    compose = load_compose(DOT_ENV)
    for name in APP_SERVICES:
        unread = set(environment(service(compose, name))) - read
        assert not unread, f"{name} sets variables nothing reads: {sorted(unread)}"
    image_env = {k for k in dockerfile_stages()["app"].env if k.startswith(OWN_PREFIXES)}
    assert image_env <= read, f"the Dockerfile sets {sorted(image_env - read)}"


def run_at_scale_section() -> str:
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


def test_every_variable_of_the_compose_file_is_documented_with_its_default() -> None:
    used: set[str] = set()
    compose = load_compose(DOT_ENV, used)
    app_variables = {k for name in APP_SERVICES for k in environment(service(compose, name))}
    section = run_at_scale_section()
    for name in sorted(app_variables):
        assert f"`{name}`" in section, f'{name} is not in the README\'s "Run at scale"'
    table = defaults_table(section)
    missing = sorted(used - set(table))
    assert not missing, f'not in the table of the README\'s "Run at scale": {missing}'
    # A literal default (``${VAR:-6}``) is the one the table states.
    for name, default in re.findall(r"\$\{(\w+):?-([^${}]+)\}", COMPOSE_FILE.read_text()):
        assert f"`{default}`" in table[name], f"{name}: the README does not say {default!r}"


# --- Commands ------------------------------------------------------------------------


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


def test_every_command_exists_and_accepts_its_options(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        check_manage_py(command(service(compose, name)))
    check_manage_py(app_stage(compose).cmd)
    for definition in compose["services"].values():
        if "healthcheck" not in definition:
            continue
        argv = healthcheck_command(definition)[1:]
        if argv[:3] == ["python", "-m", "deploy.healthcheck"]:
            healthcheck.build_parser().parse_args(argv[3:])


def test_the_web_service_listens_where_the_proxy_sends_requests(compose: dict[str, Any]) -> None:
    options = check_manage_py(command(service(compose, "web")))
    assert options.host == "0.0.0.0", "the proxy reaches web from another container"
    assert str(options.port) in [str(port) for port in service(compose, "web")["expose"]]
    upstream = nginx_upstream_servers()["web"]
    assert upstream == [f"web:{options.port}"]
    health = healthcheck_command(service(compose, "web"))
    assert health[-1] == f"http://127.0.0.1:{options.port}/healthz"


def test_the_asgi_application_that_runweb_serves_imports_with_the_production_settings(
    compose: dict[str, Any],
) -> None:
    options = check_manage_py(command(service(compose, "web")))
    module, _, attribute = options.application.partition(":")
    code = f"import {module} as m; assert callable(m.{attribute}); print('ok')"
    result = run(["-c", code], container_env(compose, "web"))
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


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
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
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


# --- Kafka ---------------------------------------------------------------------------


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {NAME: (host, port)}."""
    result = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


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


def test_clients_are_told_a_listener_the_broker_advertises_on_their_network(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    kafka = kafka_settings(service(compose, "kafka"))
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    bound = listeners(kafka["KAFKA_LISTENERS"])
    protocols = dict(
        item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    for name in APP_SERVICES:
        resolved = app_settings[name]
        assert networks_of(service(compose, name)) & networks_of(service(compose, "kafka"))
        for server in resolved["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            host, _, port = server.strip().rpartition(":")
            assert host in names_of(compose, "kafka"), f"{name}: {host} is not the kafka service"
            matching = [n for n, address in advertised.items() if address == (host, int(port))]
            assert matching, f"{name} is told {server}; kafka advertises {advertised}"
            listener = matching[0]
            assert bound[listener][1] == int(port), f"{listener} is bound to another port"
            assert protocols[listener] == resolved["KAFKA_SECURITY_PROTOCOL"]
        assert resolved["KAFKA_ENABLE_IDEMPOTENCE"] is True, "Apache Kafka supports it"


def test_the_broker_is_its_own_controller_quorum(compose: dict[str, Any]) -> None:
    kafka = kafka_settings(service(compose, "kafka"))
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound = listeners(kafka["KAFKA_LISTENERS"])
    controller = kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in bound
    assert controller not in listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] in bound
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] != controller
    voters = kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    node_id, _, address = voters[0].partition("@")
    host, _, port = address.rpartition(":")
    assert node_id == kafka["KAFKA_NODE_ID"]
    assert host in names_of(compose, "kafka") and int(port) == bound[controller][1]
    # One broker: an internal topic with more replicas could never be created.
    assert int(kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    assert int(kafka["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 1


def kafka_topics_calls(compose: dict[str, Any]) -> list[dict[str, str]]:
    """The options of each ``kafka-topics.sh --create`` that kafka-init runs."""
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


def test_kafka_init_creates_the_topics_the_app_uses_with_several_partitions(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    calls = kafka_topics_calls(compose)
    advertised = listeners(kafka_settings(service(compose, "kafka"))["KAFKA_ADVERTISED_LISTENERS"])
    for resolved in app_settings.values():
        wanted = {resolved["KAFKA_EVENTS_TOPIC"], resolved["KAFKA_DLQ_TOPIC"]}
        assert {call["--topic"] for call in calls} == wanted
    for call in calls:
        host, _, port = call["--bootstrap-server"].rpartition(":")
        assert (host, int(port)) in advertised.values()
        # The app creates missing topics with its own settings: both must agree.
        assert int(call["--partitions"]) == app_settings["analytics"]["KAFKA_TOPIC_PARTITIONS"]
        assert int(call["--partitions"]) >= 2
        assert (
            int(call["--replication-factor"])
            == app_settings["analytics"]["KAFKA_TOPIC_REPLICATION"]
        )
    assert depends_on(service(compose, "kafka-init"))["kafka"]["condition"] == "service_healthy"
    # Only kafka-init and the app create topics, never a stray producer.
    kafka = kafka_settings(service(compose, "kafka"))
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_the_broker_accepts_the_largest_records_the_app_sends_and_consumers_fetch(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    limit = int(kafka_settings(service(compose, "kafka"))["KAFKA_MESSAGE_MAX_BYTES"])
    for resolved in app_settings.values():
        # monitor/kafka/clients.py and monitor/workers/base.py allow 64 KiB over each for headers.
        largest = max(resolved["MAX_EVENT_BYTES"], resolved["DLQ_MAX_RECORD_BYTES"]) + 64 * 1024
        assert largest <= limit <= resolved["KAFKA_MAX_FETCH_BYTES"]


def test_no_more_workers_than_partitions(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    for name in ("analytics", "notifications"):
        partitions = app_settings[name]["KAFKA_TOPIC_PARTITIONS"]
        assert replicas(service(compose, name)) <= partitions, f"{name} replicas would sit idle"


# --- Start order, health, scaling --------------------------------------------------


def one_shot_services(compose: dict[str, Any]) -> set[str]:
    return {
        target
        for definition in compose["services"].values()
        for target, condition in depends_on(definition).items()
        if (condition or {}).get("condition") == ONE_SHOT_CONDITION
    }


def test_every_dependency_is_defined_and_waited_for_with_a_condition(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    one_shot = one_shot_services(compose)
    for name, definition in services.items():
        for target, condition in depends_on(definition).items():
            assert target in services, f"{name} depends on undefined {target}"
            state = (condition or {}).get("condition")
            assert state in ("service_healthy", ONE_SHOT_CONDITION), f"{name} -> {target}"
            if state == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no health check"
    for name in one_shot:
        assert services[name].get("restart", "no") == "no", f"one-shot {name} restarts"


def test_every_long_running_service_has_a_health_check_and_restarts(
    compose: dict[str, Any],
) -> None:
    one_shot = one_shot_services(compose)
    assert one_shot == {"migrate", "kafka-init"}
    for name, definition in compose["services"].items():
        if name in one_shot:
            continue
        assert "healthcheck" in definition, f"{name} has no health check"
        assert healthcheck_command(definition)[0] in ("CMD", "CMD-SHELL")
        assert definition.get("restart") in ("unless-stopped", "always"), name


def test_the_app_starts_after_migrations_and_topics(compose: dict[str, Any]) -> None:
    for name in ("web", "analytics", "notifications", "relay"):
        needs = depends_on(service(compose, name))
        assert needs["migrate"]["condition"] == ONE_SHOT_CONDITION
        assert needs["kafka-init"]["condition"] == ONE_SHOT_CONDITION
    assert check_manage_py(command(service(compose, "migrate"))).interactive is False
    assert depends_on(service(compose, "migrate"))["postgres"]["condition"] == "service_healthy"
    assert depends_on(service(compose, "proxy"))["web"]["condition"] == "service_healthy"


def test_web_and_workers_scale_by_replicas(compose: dict[str, Any]) -> None:
    for name in ("web", "analytics", "notifications"):
        definition = service(compose, name)
        assert replicas(definition) >= 2, name
        assert "container_name" not in definition, f"{name} could not have two containers"
        assert not definition.get("ports"), f"{name} would take a host port per replica"
    # Relays claim their rows (SKIP LOCKED on PostgreSQL, tests/system/test_scale_out.py),
    # so more than one only adds failover; the database must be PostgreSQL.
    assert replicas(service(compose, "relay")) >= 2
    assert environment(service(compose, "relay"))["DATABASE_URL"].startswith("postgres://")
    published = [name for name, d in compose["services"].items() if d.get("ports")]
    assert published == ["proxy"]


def test_the_database_has_room_for_every_connection(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    postgres_command = command(service(compose, "postgres"))
    limit = int(next(arg.split("=")[1] for arg in postgres_command if "max_connections" in arg))
    web = app_settings["web"]
    # Per web process: its request threads and one for its async work; a worker
    # keeps its database thread's connection and may use one more.
    needed = replicas(service(compose, "web")) * web["WEB_PROCESSES"] * (web["WEB_THREADS"] + 1)
    needed += sum(
        replicas(service(compose, n)) * 2 for n in ("analytics", "notifications", "relay")
    )
    needed += 3 + 1  # PostgreSQL's superuser reserve, and migrate
    assert needed <= limit


def test_the_app_uses_the_database_the_postgres_service_creates(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    postgres = environment(service(compose, "postgres"))
    for name in APP_SERVICES:
        database = app_settings[name]["DATABASES"]["default"]
        assert database["ENGINE"] == "django.db.backends.postgresql"
        assert database["HOST"] in names_of(compose, "postgres") and int(database["PORT"]) == 5432
        assert database["NAME"] == postgres["POSTGRES_DB"]
        assert database["USER"] == postgres["POSTGRES_USER"]
        assert database["PASSWORD"] == postgres["POSTGRES_PASSWORD"] == DOT_ENV["POSTGRES_PASSWORD"]
    url = environment(service(compose, "web"))["DATABASE_URL"]
    assert dj_database_url.parse(url)["PASSWORD"] == DOT_ENV["POSTGRES_PASSWORD"]


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


# --- The proxy: its address, nginx -------------------------------------------------


def test_only_the_proxy_is_trusted_for_x_forwarded_for(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    address = ipaddress.ip_address(service(compose, "proxy")["networks"]["default"]["ipv4_address"])
    (pool,) = compose["networks"]["default"]["ipam"]["config"]
    assert address in ipaddress.ip_network(pool["subnet"])
    # Outside the range containers are given addresses from, so none can take it first.
    assert address not in ipaddress.ip_network(pool["ip_range"])
    for name in APP_SERVICES:
        assert networks_of(service(compose, name)) == {"default"}
        assert app_settings[name]["TRUSTED_PROXIES"] == [f"{address}/32"]
        # TLS ends in front of the proxy, which passes X-Forwarded-Proto on.
        assert app_settings[name]["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
        assert app_settings[name]["SERVE_FILES"] is False


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def one(self, name: str, *args: str) -> Directive:
        found = [d for d in self.all(name) if d.args[: len(args)] == list(args)]
        assert len(found) == 1, f"{self.name} {self.args}: {len(found)} x {name} {args}"
        return found[0]

    def value(self, name: str) -> str:
        return " ".join(self.one(name).args)

    def headers(self, directive: str = "proxy_set_header") -> dict[str, str]:
        return {d.args[0]: " ".join(d.args[1:]) for d in self.all(directive)}


def nginx_tokens(text: str) -> Iterator[str]:
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif char in "{};":
            yield char
            i += 1
        elif char in "\"'":
            end = text.index(char, i + 1)
            yield text[i + 1 : end]
            i = end + 1
        else:
            end = i
            while end < len(text) and not text[end].isspace() and text[end] not in "{};":
                end += 1
            yield text[i:end]
            i = end


def parse_nginx(text: str) -> Directive:
    """The configuration as a tree of directives (enough of nginx's grammar for this file)."""
    stack = [Directive("main", [], [])]
    words: list[str] = []
    for token in nginx_tokens(text):
        if token == ";":
            stack[-1].block.append(Directive(words[0], words[1:]))  # type: ignore[union-attr]
            words = []
        elif token == "{":
            block = Directive(words[0], words[1:], [])
            stack[-1].block.append(block)  # type: ignore[union-attr]
            stack.append(block)
            words = []
        elif token == "}":
            assert not words, f"unterminated {words}"
            stack.pop()
        else:
            words.append(token)
    assert len(stack) == 1 and not words
    return stack[0]


@pytest.fixture(scope="module")
def nginx() -> Directive:
    return parse_nginx(NGINX_CONF.read_text()).one("http")


def nginx_upstream_servers() -> dict[str, list[str]]:
    http_block = parse_nginx(NGINX_CONF.read_text()).one("http")
    return {u.args[0]: [s.args[0] for s in u.all("server")] for u in http_block.all("upstream")}


def site(nginx: Directive) -> Directive:
    return next(s for s in nginx.all("server") if any(d.args[0] == "80" for d in s.all("listen")))


def seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def nginx_map(nginx: Directive, source: str, target: str) -> dict[str, str]:
    block = nginx.one("map", source, target)
    return {d.name: " ".join(d.args) for d in block.block or []}


def test_websockets_pass_through_the_proxy_with_upgrade_and_long_reads(
    nginx: Directive, app_settings: dict[str, dict[str, Any]]
) -> None:
    location = site(nginx).one("location", "/ws/")
    for route in websocket_urlpatterns:
        assert f"/{route.pattern}".startswith("/ws/"), f"/{route.pattern} is not under /ws/"
    assert location.value("proxy_pass") == "http://web"
    assert location.value("proxy_http_version") == "1.1"
    headers = location.headers()
    assert headers["Upgrade"] == "$http_upgrade"
    assert nginx_map(nginx, "$http_upgrade", headers["Connection"])["default"] == "upgrade"
    web = app_settings["web"]
    # Reads wait for the next ping at least, and its answer.
    ping = web["WS_PING_SECONDS"] + web["WS_PING_TIMEOUT_SECONDS"]
    assert seconds(location.value("proxy_read_timeout")) > ping


def test_every_proxied_location_says_who_the_client_is(nginx: Directive) -> None:
    proxied = [loc for loc in site(nginx).all("location") if loc.all("proxy_pass")]
    assert {tuple(loc.args) for loc in proxied} == {("/ws/",), ("/",)}
    for location in proxied:
        headers = location.headers()
        # As the client sent it, port included: CSRF and the WebSocket Origin check
        # compare it with the Origin header.
        assert headers["Host"] == "$http_host"
        # Appended to, never replaced: the app reads it from the right (README, "Rate limits").
        assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
        # "https" only when the TLS terminator in front said so.
        forwarded_proto = nginx_map(nginx, "$http_x_forwarded_proto", headers["X-Forwarded-Proto"])
        assert forwarded_proto == {"default": "$scheme", "https": "https"}


def nginx_location_pattern(location: Directive) -> re.Pattern[str]:
    modifier, pattern = location.args
    assert modifier in ("~", "~*")
    return re.compile(pattern, re.IGNORECASE if modifier == "~*" else 0)


def test_the_proxy_serves_only_photos_from_media_with_the_sites_headers(
    compose: dict[str, Any], nginx: Directive, app_settings: dict[str, dict[str, Any]]
) -> None:
    web = app_settings["web"]
    media = site(nginx).one("location", web["MEDIA_URL"])
    assert media.value("disable_symlinks") == "on"
    assert media.value("return") == "404"
    (photos,) = media.all("location")
    pattern = nginx_location_pattern(photos)
    for extension in MEDIA_TYPES:
        for name in (f"a{extension}", f"ab/cd/e{extension.upper()}"):
            assert pattern.search(f"{web['MEDIA_URL']}{name}"), name
    for name in ("x.svg", "x.html", "x.gif", "x.jpg.html", ".x.jpg", "a/.b/c.png", "x.jpg/", "x"):
        assert not pattern.search(f"{web['MEDIA_URL']}{name}"), name
    types = {ext: d.name for d in photos.one("types").block or [] for ext in d.args}
    assert {f".{ext}": kind for ext, kind in types.items()} == MEDIA_TYPES
    added = {d.args[0]: d.args[1] for d in photos.all("add_header")}
    assert added == MEDIA_HEADERS
    assert all(d.args[-1] == "always" for d in photos.all("add_header"))
    (methods,) = photos.all("if")
    assert methods.args == ["($request_method", "!~", "^(?:GET|HEAD)$)"]
    assert methods.value("return") == "405"

    # The proxy reads the volume the web processes write to MEDIA_ROOT.
    directory = media.value("root") + web["MEDIA_URL"].rstrip("/")
    volume = next(
        v.split(":")[0]
        for v in service(compose, "proxy")["volumes"]
        if v.split(":")[1] == directory
    )
    assert f"{volume}:{web['MEDIA_ROOT']}" in service(compose, "web")["volumes"]


def test_the_proxy_serves_the_static_files_collected_in_the_image(
    compose: dict[str, Any], nginx: Directive, app_settings: dict[str, dict[str, Any]]
) -> None:
    web = app_settings["web"]
    stages = dockerfile_stages()
    app = app_stage(compose)
    (collect_env,) = [env for env, run in app.runs if "collectstatic" in run]
    collected = load_settings(collect_env, "STATIC_ROOT")["STATIC_ROOT"]
    # The image's project directory is WORKDIR; here it is ROOT.
    collected = collected.replace(str(ROOT), app.workdir, 1)
    assert collected == web["STATIC_ROOT"].replace(str(ROOT), app.workdir, 1)
    proxy_stage = stages[service(compose, "proxy")["build"]["target"]]
    (copied,) = [(sources, dest) for src, sources, dest in proxy_stage.copies if src == "app"]
    assert copied[0] == [collected]
    location = site(nginx).one("location", web["STATIC_URL"])
    assert location.value("root") + web["STATIC_URL"].rstrip("/") == copied[1]
    assert (None, ["deploy/nginx.conf"], "/etc/nginx/nginx.conf") in proxy_stage.copies


def test_the_proxy_lets_through_the_largest_photo_the_site_accepts(
    nginx: Directive, app_settings: dict[str, dict[str, Any]]
) -> None:
    size = nginx.value("client_max_body_size")
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    limit = int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)
    assert limit > app_settings["web"]["MAX_PHOTO_BYTES"]


def nginx_version() -> tuple[int, ...] | None:
    if not shutil.which("nginx"):
        return None
    output = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    return tuple(int(part) for part in re.search(r"nginx/([\d.]+)", output).group(1).split("."))  # type: ignore[union-attr]


# .ci/run installs Debian's nginx, so on CI these run; elsewhere they skip
# without it, and say so.
needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None and os.getenv("CI") != "true",
    reason="nginx is not installed (apt-get install nginx): deploy/nginx.conf was read "
    "and checked, not run",
)


@needs_nginx
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    version = nginx_version()
    assert version is not None
    text = NGINX_CONF.read_text()
    if version < (1, 27, 3):
        # Older nginx has no "resolve" for upstream servers and would look up the
        # service name at start: point the copy at an address, keep the rest.
        text, count = re.subn(r"server web:(\d+) resolve;", r"server 127.0.0.1:\1;", text)
        assert count == 1
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    result = subprocess.run(
        ["nginx", "-t", "-c", str(config), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@dataclass
class RunningProxy:
    url: str
    srv: Path


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_nginx(tmp_path: Path, upstream: str) -> Iterator[RunningProxy]:
    """nginx with deploy/nginx.conf, but listening on free local ports, serving files
    from ``tmp_path/srv`` and passing requests to ``upstream`` (``host:port``); stopped
    by its PID at the end."""
    port, health_port, srv = free_tcp_port(), free_tcp_port(), tmp_path / "srv"
    text = NGINX_CONF.read_text()
    replacements = [
        (r"server web:\d+ resolve;", f"server {upstream};"),
        (r"listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;"),
        (r"listen 127\.0\.0\.1:8081;", f"listen 127.0.0.1:{health_port};"),
        (r"root /srv;", f"root {srv};"),
        (
            r"http \{",
            f"http {{ access_log {tmp_path}/access.log; "
            f"client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;",
        ),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        assert count, pattern
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    (srv / "media").mkdir(parents=True)
    globals_ = f"daemon off; pid {tmp_path}/nginx.pid; user root;"
    process = subprocess.Popen(
        ["nginx", "-c", str(config), "-e", str(tmp_path / "error.log"), "-g", globals_]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{health_port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, (tmp_path / "error.log").read_text()
                time.sleep(0.05)
        yield RunningProxy(url, srv)
    finally:
        stop_processes([process])


@needs_nginx
def test_the_proxy_serves_photos_and_static_files_and_nothing_else(tmp_path: Path) -> None:
    closed = free_tcp_port()
    with running_nginx(tmp_path, f"127.0.0.1:{closed}") as proxy:
        media = proxy.srv / "media"
        photo = jpeg_bytes()
        (media / "ab").mkdir()
        (media / "ab" / "photo.jpg").write_bytes(photo)
        (media / "ab" / "shot.webp").write_bytes(b"RIFF....WEBP")
        for name in ("page.html", "evil.svg", ".hidden.jpg", "photo.jpg.html"):
            (media / name).write_bytes(b"<script>alert(1)</script>")
        (proxy.srv / "secret.jpg").write_bytes(photo)
        (media / "link.jpg").symlink_to(proxy.srv / "secret.jpg")
        static = run(
            ["manage.py", "collectstatic", "--noinput"],
            {"DJANGO_STATIC_ROOT": str(proxy.srv / "static")},
        )
        assert static.returncode == 0, static.stderr

        with httpx.Client(base_url=proxy.url) as client:
            response = client.get("/media/ab/photo.jpg")
            assert response.status_code == 200 and response.content == photo
            assert response.headers["Content-Type"] == "image/jpeg"
            for header, value in MEDIA_HEADERS.items():
                assert response.headers[header] == value
            assert client.get("/media/ab/shot.webp").headers["Content-Type"] == "image/webp"
            assert client.head("/media/ab/photo.jpg").status_code == 200
            assert client.post("/media/ab/photo.jpg").status_code == 405
            for path in (
                "/media/page.html",
                "/media/evil.svg",
                "/media/.hidden.jpg",
                "/media/photo.jpg.html",
                "/media/link.jpg",
                "/media/missing.jpg",
                "/media/ab/",
                "/media/",
            ):
                assert client.get(path).status_code == 404, path

            script = client.get("/static/monitor/stream.js")
            assert script.status_code == 200
            assert script.content == (ROOT / "static" / "monitor" / "stream.js").read_bytes()
            assert script.headers["Content-Type"] == "application/javascript"
            assert script.headers["X-Content-Type-Options"] == "nosniff"
            assert client.get("/static/admin/css/base.css").headers["Content-Type"] == "text/css"
            # Anything else goes to the web processes (none are running here).
            assert client.get("/healthz").status_code == 502


@needs_nginx
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_proxy_passes_requests_and_websockets_to_the_web_processes(
    tmp_path: Path, stack: Stack, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user(username="proxied", password="pw-proxied-1")
    token = token_create(user=user, name="proxy")[1]
    with running_nginx(tmp_path, stack.base_url.removeprefix("http://")) as proxy:
        health = httpx.get(f"{proxy.url}/healthz", timeout=10)
        assert health.status_code in (200, 503) and "database" in health.json()
        ws_url = proxy.url.replace("http://", "ws://") + "/ws/events/"
        headers = {"Authorization": f"Bearer {token}"}
        with ws_connect(ws_url, additional_headers=headers, open_timeout=10) as stream:
            welcome = json.loads(stream.recv(timeout=10))
            assert welcome["type"] == "welcome" and welcome["user"] == "proxied"
            stream.send(json.dumps({"type": "ping"}))
            assert json.loads(stream.recv(timeout=10)) == {"type": "pong"}
        # A page of the site, signed in by its cookie: its Origin names the proxy's
        # address, port included, which must reach the site as the Host.
        browser = Client()
        browser.force_login(user)
        cookie = {"Cookie": f"sessionid={browser.cookies['sessionid'].value}"}
        with ws_connect(ws_url, origin=proxy.url, additional_headers=cookie) as stream:
            welcome = json.loads(stream.recv(timeout=10))
            assert welcome["type"] == "welcome" and welcome["user"] == "proxied"


# --- deploy/healthcheck.py ---------------------------------------------------------


def test_the_health_check_sends_a_host_the_site_allows() -> None:
    assert healthcheck.allowed_host("events.example.com,other") == "events.example.com"
    assert healthcheck.allowed_host(" .example.com") == "example.com"
    assert healthcheck.allowed_host("*") == "localhost"
    assert healthcheck.allowed_host("") == "localhost"


class _Recorder(http.server.BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:
        self.hosts.append(self.headers["Host"])
        status = 200 if self.path == "/healthz" else 503
        body = b'{"status": "unavailable"}' if status != 200 else b'{"status": "ok"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.hosts = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_web_health_check_is_healthy_only_on_200(recorder: str) -> None:
    env = {"DJANGO_ALLOWED_HOSTS": ".example.com"}
    healthy = run(["-m", "deploy.healthcheck", "http", f"{recorder}/healthz"], env)
    assert healthy.returncode == 0, healthy.stderr
    assert _Recorder.hosts == ["example.com"]
    unhealthy = run(["-m", "deploy.healthcheck", "http", f"{recorder}/down"], env)
    assert unhealthy.returncode == 1
    assert "503" in unhealthy.stderr and "unavailable" in unhealthy.stderr
    closed = free_tcp_port()
    refused = run(["-m", "deploy.healthcheck", "http", f"http://127.0.0.1:{closed}/healthz"], env)
    assert refused.returncode == 1 and "unhealthy" in refused.stderr


HEALTHZ_THROUGH_DJANGO = """
import django, json
django.setup()
from django.test import Client
from deploy.healthcheck import allowed_host
import os
response = Client().get("/healthz", HTTP_HOST=allowed_host(os.environ["DJANGO_ALLOWED_HOSTS"]))
print(json.dumps([response.status_code, response.headers.get("Content-Type")]))
"""


def test_the_production_site_answers_the_web_health_check_over_plain_http(
    compose: dict[str, Any], kafka_broker: Any, tmp_path: Path
) -> None:
    # Not redirected to HTTPS, and its Host allowed: the answer is /healthz's own.
    env = {
        **container_env(compose, "web"),
        "DJANGO_ALLOWED_HOSTS": "events.example.com,.example.org",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'health.sqlite3'}",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
    }
    result = run(["-c", HEALTHZ_THROUGH_DJANGO], env)
    assert result.returncode == 0, result.stderr
    status, content_type = json.loads(result.stdout.strip().splitlines()[-1])
    assert status in (200, 503) and content_type == "application/json"


def test_the_worker_health_check_reaches_the_database_and_the_broker(
    compose: dict[str, Any], kafka_broker: Any
) -> None:
    env = {
        **container_env(compose, "analytics"),
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
    }
    (argv,) = {tuple(healthcheck_command(service(compose, n))[1:]) for n in ("analytics", "relay")}
    healthy = run(list(argv[1:]), env)
    assert healthy.returncode == 0, healthy.stderr

    closed = free_tcp_port()
    no_broker = run(list(argv[1:]), {**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}"})
    assert no_broker.returncode == 1 and "broker" in no_broker.stderr
    no_database = run(
        list(argv[1:]), {**env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed}/test"}
    )
    assert no_database.returncode == 1 and "database" in no_database.stderr
