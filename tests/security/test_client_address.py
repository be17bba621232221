"""The client's address (monitor/security/client_address.py): trusted proxies,
X-Forwarded-For read from the right, odd entries, and IPv6 grouped by /64."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from eventsite.env import envnetworks
from monitor.security.client_address import address_key, client_address

ADDRESS_A = "203.0.113.10"


# --- The setting -------------------------------------------------------------


def test_trusted_proxies_are_addresses_or_networks(monkeypatch) -> None:
    monkeypatch.setenv("EVENTSITE_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")
    assert envnetworks("EVENTSITE_TRUSTED_PROXIES") == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "2001:db8::/32",
    ]
    monkeypatch.delenv("EVENTSITE_TRUSTED_PROXIES")
    assert envnetworks("EVENTSITE_TRUSTED_PROXIES") == []
    monkeypatch.setenv("EVENTSITE_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")
    with pytest.raises(ImproperlyConfigured, match="'proxy.internal' is not an IP address"):
        envnetworks("EVENTSITE_TRUSTED_PROXIES")


# --- The client's address -----------------------------------------------------


def request_from(remote: str | None, forwarded: str | None = None) -> Any:
    meta: dict[str, str] = {}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    request = RequestFactory().post("/posts/new/", **meta)
    if remote is None:
        del request.META["REMOTE_ADDR"]
    else:
        request.META["REMOTE_ADDR"] = remote
    return request


def test_forwarded_for_from_an_untrusted_peer_is_ignored(settings) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(request_from(ADDRESS_A, "198.51.100.99")) == ADDRESS_A
    settings.TRUSTED_PROXIES = []
    assert client_address(request_from("10.0.0.2", "198.51.100.99")) == "10.0.0.2"


def test_it_walks_a_chain_of_trusted_proxies_from_the_right(settings) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]
    # The client wrote the first entry itself; each proxy appended its peer.
    chain = f"198.51.100.99, {ADDRESS_A}, 10.0.0.1, 2001:db8:ffff::5"
    assert client_address(request_from("10.0.0.2", chain)) == ADDRESS_A
    assert client_address(request_from("10.0.0.2", ADDRESS_A)) == ADDRESS_A
    # Only proxies in the chain: the farthest one is the client.
    assert client_address(request_from("10.0.0.2", "10.9.9.9, 10.0.0.1")) == "10.9.9.9"
    # No header: the proxy itself.
    assert client_address(request_from("10.0.0.2")) == "10.0.0.2"


def test_it_reads_ports_brackets_and_mapped_addresses(settings) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(request_from("::ffff:10.0.0.2", f"{ADDRESS_A}:5123")) == ADDRESS_A
    forwarded = "[2001:db8:1:2::7]:443"
    assert client_address(request_from("10.0.0.2", forwarded)) == "2001:db8:1:2::7"


@pytest.mark.parametrize(
    "forwarded, client",
    [
        ("not-an-address", "10.0.0.2"),
        (f"{ADDRESS_A}, unknown", "10.0.0.2"),
        (f"{ADDRESS_A},,", "10.0.0.2"),
        (f"{ADDRESS_A}, 999.1.1.1, 10.0.0.1", "10.0.0.1"),
        ("\x00;DROP TABLE", "10.0.0.2"),
        (f"garbage, {ADDRESS_A}, 10.0.0.1", ADDRESS_A),
    ],
)
def test_an_entry_that_is_no_address_ends_the_walk(settings, forwarded, client) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    # What is left of it came from nobody we trust: the request counts as
    # from the last proxy read, or from the client found before it.
    assert client_address(request_from("10.0.0.2", forwarded)) == client


def test_a_missing_or_odd_remote_address_is_still_a_key(settings) -> None:
    assert client_address(request_from(None, ADDRESS_A)) == "unknown"
    assert client_address(request_from("unix-socket")) == "unix-socket"
    assert address_key("unknown") == "addr:unknown"


def test_ipv6_addresses_are_grouped_by_64(settings) -> None:
    one = address_key("2001:db8:1:2:aaaa::1")
    assert one == "addr:2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == one
    assert address_key("2001:db8:1:3::1") != one
    assert address_key(ADDRESS_A) == f"addr:{ADDRESS_A}"
    assert address_key("::ffff:203.0.113.10") == f"addr:{ADDRESS_A}"
