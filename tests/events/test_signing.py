"""monitor.events.signing: the site's signature on its own events, its keys,
their rotation, and a missing key."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django import Settings

from monitor.events import signing

VALUE = b'{"specversion":"1.0","type":"photo.liked"}'
NEW = "new:" + "n" * 40
OLD = "old:" + "o" * 40


def test_a_signed_value_verifies_and_anything_else_says_why_not(settings: Settings) -> None:
    settings.EVENT_SIGNING_KEYS = NEW
    header = signing.sign(VALUE)
    assert header[0] == "eventsite-signature" and header[1].startswith(b"v1=new:")
    assert signing.check(VALUE, [header]) is None
    assert signing.check(VALUE + b"x", [header]) == "signature does not match"
    assert signing.check(VALUE, []) == "not signed by this site"
    assert signing.check(VALUE, None) == "not signed by this site"
    assert signing.check(None, [header]) == "no value to verify"
    forged = ("eventsite-signature", b"v1=new:" + b"0" * 64)
    assert signing.check(VALUE, [forged]) == "signature does not match"
    assert signing.check(VALUE, [("eventsite-signature", b"sha1=abc")]) is not None
    assert signing.check(VALUE, [("eventsite-signature", b"\xff\xfe")]) == (
        "signature is not ASCII"
    )
    unknown = ("eventsite-signature", b"v1=gone:" + header[1].split(b":")[1])
    assert signing.check(VALUE, [unknown]) == "signed with an unknown key 'gone'"


def test_a_key_is_rotated_by_putting_the_new_one_first(settings: Settings) -> None:
    settings.EVENT_SIGNING_KEYS = OLD
    by_old = signing.sign(VALUE)
    settings.EVENT_SIGNING_KEYS = f"{NEW},{OLD}"  # the new key signs, both verify
    by_new = signing.sign(VALUE)
    assert by_new[1].startswith(b"v1=new:")
    assert signing.check(VALUE, [by_old]) is None and signing.check(VALUE, [by_new]) is None
    settings.EVENT_SIGNING_KEYS = NEW  # the old key is retired
    assert signing.check(VALUE, [by_old]) == "signed with an unknown key 'old'"
    assert signing.check(VALUE, [by_new]) is None


def test_with_no_key_set_one_is_derived_from_the_secret_key(settings: Settings) -> None:
    settings.EVENT_SIGNING_KEYS = ""
    settings.SECRET_KEY = "first-secret-" + "a" * 40
    settings.SECRET_KEY_FALLBACKS = []
    by_first = signing.sign(VALUE)
    assert signing.check(VALUE, [by_first]) is None
    # Rotating SECRET_KEY the Django way keeps the old events verifiable...
    settings.SECRET_KEY = "second-secret-" + "b" * 40
    settings.SECRET_KEY_FALLBACKS = ["first-secret-" + "a" * 40]
    assert signing.check(VALUE, [by_first]) is None
    assert signing.sign(VALUE) != by_first
    # ...until the fallback is dropped.
    settings.SECRET_KEY_FALLBACKS = []
    assert signing.check(VALUE, [by_first]).startswith("signed with an unknown key")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("no-colon", "comma-separated list of id:secret"),
        (":" + "s" * 40, "comma-separated list of id:secret"),
        ("k-1:" + "s" * 40, "ids are letters and digits"),
        ("k1:short", "shorter than 32 characters"),
        (f"k1:{'s' * 40},k1:{'t' * 40}", "names a key id twice"),
    ],
)
def test_a_malformed_key_list_is_refused_with_the_reason(
    settings: Settings, keys: str, message: str
) -> None:
    settings.EVENT_SIGNING_KEYS = keys
    with pytest.raises(ImproperlyConfigured, match=message):
        signing.sign(VALUE)


def test_a_malformed_key_list_stops_every_command_at_its_system_check(settings: Settings) -> None:
    from monitor.apps import check_signing_keys

    settings.EVENT_SIGNING_KEYS = NEW
    assert check_signing_keys() == []
    settings.EVENT_SIGNING_KEYS = "k1:short"
    (error,) = check_signing_keys()
    assert error.id == "eventsite.E001" and "shorter than 32 characters" in error.msg
