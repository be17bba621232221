"""Fixtures of the deployment tests: docker-compose.yml as Compose sees it with
an operator's .env, the settings each app service resolves from it, the
``http`` block of deploy/nginx.conf (each read once per test module), and a
``make run`` stack (``runstack``) running for a test module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.compose import APP_SERVICES, DOT_ENV, load_compose
from tests.support.environment import settings_per_service
from tests.support.nginx import Directive, nginx_http
from tests.support.stack import RunStack


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(DOT_ENV)


@pytest.fixture(scope="module")
def app_settings(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per app service, its settings as its processes resolve them."""
    return settings_per_service(compose, APP_SERVICES)


@pytest.fixture(scope="module")
def nginx() -> Directive:
    return nginx_http()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunStack]:
    """``manage.py runstack`` on free ports with its own var/, for the module's tests."""
    stack = RunStack(tmp_path_factory.mktemp("var"))
    try:
        yield stack.start()
    finally:
        stack.stop()
