"""Which Origins may use the session cookie on a WebSocket, and which signed-in
sockets' credentials still stand."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore

from monitor.live.socket_auth import Credential, origin_allowed, still_valid
from monitor.security.tokens import token_create, token_revoke


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://LOCALHOST", "localhost", True),
        ("http://evil.example", "127.0.0.1:8000", False),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),  # another port is another site
        ("http://localhost:8000", "127.0.0.1:8000", False),
        (None, "127.0.0.1:8000", False),
        ("null", "127.0.0.1:8000", False),  # sandboxed frames, file: pages
        ("file://", "127.0.0.1:8000", False),
        ("http://attacker.test", "attacker.test", False),  # not an allowed host
        ("http://127.0.0.1:8000", None, False),
    ],
)
def test_it_allows_only_the_sites_own_origin(origin, host, allowed) -> None:  # type: ignore[no-untyped-def]
    assert origin_allowed(origin, host) is allowed


def test_trusted_origins_are_allowed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CSRF_TRUSTED_ORIGINS = ["https://dash.example.com"]
    assert origin_allowed("https://dash.example.com", "internal:8000")
    assert not origin_allowed("https://other.example.com", "internal:8000")


@pytest.mark.django_db
def test_a_credential_stands_while_its_session_token_and_user_do() -> None:
    ana = User.objects.create_user(username="ana", password="pw-ana-123456")
    session = SessionStore()
    session.create()
    row, _ = token_create(user=ana, name="t")
    by_session = Credential("session", session.session_key, ana.pk)
    by_token = Credential("token", row.pk, ana.pk)
    assert still_valid({by_session, by_token}) == {by_session, by_token}
    session.flush()  # what logging out does
    assert still_valid({by_session, by_token}) == {by_token}
    token_revoke(token=row)
    assert still_valid({by_token}) == set()
    other, _ = token_create(user=ana, name="u")
    by_other = Credential("token", other.pk, ana.pk)
    ana.is_active = False
    ana.save()
    assert still_valid({by_other}) == set()
