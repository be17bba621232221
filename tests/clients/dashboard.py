"""The consumer groups panel as an operator's browser reads it: the ``groups``
of /dashboard/state.json, asked over HTTP of a running web process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

Groups = dict[str, dict[str, Any]]


def wait_for_state(
    operator: httpx.Client, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """The state (with ``groups`` as {name: group}) once the broker was read and
    ``done`` accepts it; fails after ``timeout`` seconds with the last answer.
    ``operator`` is a staff user's signed-in client."""
    deadline = time.monotonic() + timeout
    while True:
        response = operator.get("/dashboard/state.json")
        assert response.status_code == 200, response.text
        body = response.json()
        body["groups"] = {group["group"]: group for group in body["groups"]}
        if body["broker"].get("ok") and done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the dashboard did not show it within {timeout:g} s: {json.dumps(body)[:4000]}"
            )
        time.sleep(0.5)


def wait_for_groups(
    operator: httpx.Client, done: Callable[[Groups], bool], timeout: float
) -> dict[str, Any]:
    """:func:`wait_for_state`, until ``done`` accepts its groups."""
    return wait_for_state(operator, lambda state: done(state["groups"]), timeout)
