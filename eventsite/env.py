"""Typed readers of environment variables, for the settings modules.

Each reads one variable and returns its default when the variable is unset
or empty. A value that cannot mean what the setting needs is never guessed
at: it raises ImproperlyConfigured naming the variable, so a mistyped value
stops the process at start instead of changing its behaviour quietly.
"""

from __future__ import annotations

import ipaddress
import os

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def envbool(name: str, default: bool) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off``, in any case."""
    value = os.getenv(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def envint(name: str, default: int) -> int:
    """A whole number, as ``int()`` reads it."""
    value = os.getenv(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def envlist(name: str, default: str) -> list[str]:
    """Comma-separated items, each stripped; empty items are dropped."""
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


def envnetworks(name: str) -> list[str]:
    """Comma-separated IP addresses or networks, each as its network's text
    (``10.0.0.7`` becomes ``10.0.0.7/32``, host bits are cleared)."""
    networks = []
    for item in envlist(name, ""):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not an IP address or network (such as 10.0.0.0/8)"
            ) from None
    return networks


def envrates(name: str, defaults: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Limits as ``action=N/S,...`` (at most N requests every S seconds), each
    over its default; ``action=off``, or the whole value ``off``, lifts limits.
    An unknown action, an action given twice or a malformed rate is refused."""
    value = os.getenv(name, "").strip()
    if value.lower() == "off":
        return {}
    rates, given = dict(defaults), set()
    for item in filter(None, (part.strip() for part in value.split(","))):
        action, _, rate = (part.strip() for part in item.partition("="))
        if action not in defaults:
            known = ", ".join(sorted(defaults))
            raise ImproperlyConfigured(f"{name}: unknown action {action!r} (known: {known})")
        if action in given:
            raise ImproperlyConfigured(f"{name}: {action!r} is given twice")
        given.add(action)
        if rate.lower() == "off":
            del rates[action]
        else:
            rates[action] = _rate(name, item, action, rate)
    return rates


def _rate(name: str, item: str, action: str, rate: str) -> tuple[int, int]:
    """``N/S`` as ``(N, S)``, both whole numbers above 0."""
    count, slash, seconds = rate.partition("/")
    if slash and count.isdecimal() and seconds.isdecimal() and int(count) and int(seconds):
        return int(count), int(seconds)
    raise ImproperlyConfigured(
        f"{name}: {item!r} must be {action}=N/S (at most N requests every S seconds, "
        f"both whole numbers above 0) or {action}=off"
    )
