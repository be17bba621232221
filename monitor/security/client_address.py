"""Who sent a request: the client's address, and the key it is counted on.

A request reaches the site directly or through reverse proxies. Only the
proxies named in ``settings.TRUSTED_PROXIES`` are believed about where a
request came from (their ``X-Forwarded-For``); anyone else could write any
address there. The rate limits (monitor.security.ratelimit) count a request
on ``address_key(client_address(request))``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# One subscriber usually holds a whole IPv6 /64, and can pick any address in it.
IPV6_SUBSCRIBER_PREFIX = 64
UNKNOWN_CLIENT = "unknown"


def client_address(request: HttpRequest) -> str:
    """The address of the client that sent ``request``.

    That is ``REMOTE_ADDR``, unless it is one of ``settings.TRUSTED_PROXIES``:
    then ``X-Forwarded-For`` is read from the right (each proxy appends the
    address it was reached from), passing trusted proxies, and the first
    address that is not one is the client. An entry that is not an address
    ends the walk at the last proxy read, since nothing left of it can be
    believed. A request with no ``REMOTE_ADDR`` comes from ``"unknown"``.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    peer = parse_address(remote)
    if peer is None:
        return remote.strip() or UNKNOWN_CLIENT
    trusted = _networks(tuple(settings.TRUSTED_PROXIES))
    if not _is_in(peer, trusted):
        return str(peer)
    return str(_walk_forwarded(peer, request.META.get("HTTP_X_FORWARDED_FOR", ""), trusted))


def address_key(address: str) -> str:
    """``addr:<ip>`` for an IPv4 address, ``addr:<network>/64`` for IPv6 (one
    subscriber usually holds a whole /64), the text itself if not an address."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((parsed, IPV6_SUBSCRIBER_PREFIX), strict=False)
        return f"addr:{network}"
    return f"addr:{parsed if parsed is not None else address}"


def parse_address(text: str) -> IPAddress | None:
    """An address from ``REMOTE_ADDR`` or a forwarded entry (``[v6]:port`` and
    ``v4:port`` forms too); IPv4-mapped IPv6 as IPv4; None if it is none."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _walk_forwarded(proxy: IPAddress, forwarded: str, trusted: Iterable[IPNetwork]) -> IPAddress:
    """The client behind the trusted ``proxy``: ``forwarded`` read from the
    right until an address that is not a trusted proxy, or an entry that is
    no address (then the last address read)."""
    hop = proxy
    for entry in reversed(forwarded.split(",")):
        address = parse_address(entry)
        if address is None:
            break
        hop = address
        if not _is_in(address, trusted):
            break
    return hop


@functools.cache
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The trusted proxies' networks, parsed once per distinct setting."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _is_in(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in networks)
