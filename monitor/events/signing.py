"""The site's signature on the events it emits, so that it acts only on its own.

Anyone who can write to the topic can write an event of the site's types;
the monitor shows such events (marked unverified) but nothing the site does
for users (feed updates, like counts, notices) may follow from them. The
site signs every record it sends with an HMAC-SHA256 over the record's value,
in the header :data:`SIGNATURE_HEADER`::

    eventsite-signature: v1=<key id>:<hex digest>

Keys come from ``EVENT_SIGNING_KEYS`` (``id:secret,id:secret``): the first
signs, every one verifies, so a key is rotated by putting the new one first,
and dropping the old one once no record signed with it is still read. With
no key set, one is derived from ``SECRET_KEY`` (and one more from each of
``SECRET_KEY_FALLBACKS``, which then verify too): a site that has a secret
key signs its events with no setting of its own, and rotating ``SECRET_KEY``
the Django way rotates this key with it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SIGNATURE_HEADER = "eventsite-signature"
SCHEME = "v1"
DERIVED_SALT = b"eventsite.events.signing"
MIN_SECRET_CHARS = 32

Keys = tuple[tuple[str, bytes], ...]


def parse_keys(text: str) -> Keys:
    """``id:secret,id:secret`` as (id, secret) pairs, the signing key first.
    Raises ImproperlyConfigured for a malformed list or a short secret."""
    keys: list[tuple[str, bytes]] = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key_id, colon, secret = part.partition(":")
        if not colon or not key_id or not key_id.isalnum():
            raise ImproperlyConfigured(
                "EVENT_SIGNING_KEYS is a comma-separated list of id:secret"
                " (ids are letters and digits)"
            )
        if len(secret) < MIN_SECRET_CHARS:
            raise ImproperlyConfigured(
                f"EVENT_SIGNING_KEYS: the secret of {key_id!r} is shorter than"
                f" {MIN_SECRET_CHARS} characters"
            )
        keys.append((key_id, secret.encode()))
    ids = [key_id for key_id, _ in keys]
    if len(set(ids)) != len(ids):
        raise ImproperlyConfigured("EVENT_SIGNING_KEYS names a key id twice")
    return tuple(keys)


def _derived(secret: str) -> bytes:
    return hmac.new(secret.encode(), DERIVED_SALT, hashlib.sha256).digest()


@lru_cache(maxsize=8)
def _keys_for(configured: str, secret_key: str, fallbacks: tuple[str, ...]) -> Keys:
    keys = parse_keys(configured)
    if keys:
        return keys
    # A derived key's id is named after the key itself, so that a signature
    # still finds its key once SECRET_KEY has moved to SECRET_KEY_FALLBACKS.
    derived = [_derived(secret) for secret in (secret_key, *fallbacks)]
    return tuple((hashlib.sha256(key).hexdigest()[:12], key) for key in derived)


def signing_keys() -> Keys:
    """The keys in use now: the first signs, all verify."""
    return _keys_for(
        settings.EVENT_SIGNING_KEYS,
        settings.SECRET_KEY,
        tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ())),
    )


def _digest(secret: bytes, value: bytes) -> str:
    return hmac.new(secret, value, hashlib.sha256).hexdigest()


def sign(value: bytes) -> tuple[str, bytes]:
    """The signature header for a record whose value is ``value``."""
    key_id, secret = signing_keys()[0]
    return SIGNATURE_HEADER, f"{SCHEME}={key_id}:{_digest(secret, value)}".encode()


def signature_of(headers: Iterable[tuple[str, bytes | None]] | None) -> bytes | None:
    """The signature header's value among a record's ``headers``, if there is one."""
    for name, value in headers or ():
        if name == SIGNATURE_HEADER:
            return value
    return None


def check(value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """None if ``value`` carries a valid signature of the site's; else why not."""
    signature = signature_of(headers)
    if signature is None:
        return "not signed by this site"
    if value is None:
        return "no value to verify"
    try:
        scheme, _, rest = signature.decode("ascii").partition("=")
    except UnicodeDecodeError:
        return "signature is not ASCII"
    key_id, _, digest = rest.partition(":")
    if scheme != SCHEME or not digest:
        return "signature is not of the form v1=<key id>:<digest>"
    for known_id, secret in signing_keys():
        if known_id == key_id:
            if hmac.compare_digest(_digest(secret, value), digest):
                return None
            return "signature does not match"
    return f"signed with an unknown key {key_id[:32]!r}"
