"""docker-compose.yml against the code: each Django service's environment,
resolved as Compose would resolve it, loads the production settings and passes
the deploy check; every variable is one the code reads and the README
documents; every command parses with the command's own parser; services start
in order, scale by replicas, fit the database's connections, and trust only
the proxy.

Docker does not run here: the files are read (tests/support/compose.py) and
each service's processes are run as Python processes with its environment.
The Kafka services, the Dockerfile, the proxy and the health checks have
modules of their own beside this one.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import dj_database_url
import pytest
from django.conf import ENVIRONMENT_VARIABLE

from deploy import healthcheck
from tests.support.compose import (
    APP_SERVICES,
    COMPOSE_FILE,
    DOT_ENV,
    ENV_EXAMPLE,
    ONE_SHOT_CONDITION,
    MissingVariable,
    command,
    depends_on,
    environment,
    healthcheck_command,
    interpolate,
    load_compose,
    names_of,
    networks_of,
    one_shot_services,
    raw_compose,
    read_env_file,
    replicas,
    service,
)
from tests.support.dockerfile import app_stage, container_env, dockerfile_stages
from tests.support.environment import (
    OWN_PREFIXES,
    check_manage_py,
    run,
    settings_variables,
    variables_the_settings_require,
)
from tests.support.nginx import nginx_upstream_servers
from tests.support.readme import defaults_table, run_at_scale_section

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


def test_each_variable_the_production_settings_require_is_set_and_compose_insists_on_it(
    compose: dict[str, Any],
) -> None:
    env = container_env(compose, "web")
    required = variables_the_settings_require(env)
    # What eventsite/production.py documents as required, found by taking each away.
    assert {ENVIRONMENT_VARIABLE, "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"} <= set(required)
    raw = raw_compose()["x-eventsite-environment"]
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
    example = read_env_file(ENV_EXAMPLE)
    assert example == dict.fromkeys(DOT_ENV, "")
    for name in example:
        with pytest.raises(MissingVariable, match=name):
            load_compose({**DOT_ENV, name: ""})
    used: set[str] = set()
    load_compose(DOT_ENV, used)
    commented = set(re.findall(r"^# ([A-Z_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert commented <= used, f"deploy/env.example names unknown variables {commented - used}"


def test_every_variable_given_to_the_app_is_one_the_code_reads() -> None:
    read = settings_variables()
    assert {"DJANGO_SECRET_KEY", "KAFKA_BOOTSTRAP_SERVERS", "EVENTSITE_TRUSTED_PROXIES"} <= read
    compose = load_compose(DOT_ENV)
    for name in APP_SERVICES:
        unread = set(environment(service(compose, name))) - read
        assert not unread, f"{name} sets variables nothing reads: {sorted(unread)}"
    image_env = {k for k in dockerfile_stages()["app"].env if k.startswith(OWN_PREFIXES)}
    assert image_env <= read, f"the Dockerfile sets {sorted(image_env - read)}"


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


# --- Start order, health, scaling --------------------------------------------------


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


# --- The proxy's address ----------------------------------------------------------


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
