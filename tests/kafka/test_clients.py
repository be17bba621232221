"""Kafka security: the settings are checked when they load, every client
monitor/kafka/clients.py makes carries them, and TLS works against a real broker."""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured

from eventsite.kafka_security import check_kafka_security
from monitor.kafka import clients as kafka
from monitor.kafka.embedded import broker_binary, free_port
from tests.support.kafka import read_all
from tests.support.project import ROOT

KEY_PASSWORD = "key-pass-phrase"


@dataclass(frozen=True)
class Pki:
    """A throwaway CA and the certificates it signed; ``files`` also holds a second
    CA (``other_ca``) that signed none of them, and files that are not what they seem."""

    ca: trustme.CA
    server: trustme.LeafCert  # for 127.0.0.1, the address the broker advertises
    misnamed_server: trustme.LeafCert  # for another host name only
    files: dict[str, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    client = ca.issue_cert("eventsite-client", common_name="eventsite-client")
    server = ca.issue_cert("127.0.0.1")
    files = {name: directory / f"{name}.pem" for name in ("ca", "other_ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    other_ca.cert_pem.write_to_path(str(files["other_ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    files["encrypted_key"] = directory / "encrypted_key.pem"
    files["encrypted_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
        )
    )
    files["server_key"] = directory / "server_key.pem"
    server.private_key_pem.write_to_path(str(files["server_key"]))
    files["garbage"] = directory / "garbage.pem"
    files["garbage"].write_text("not a certificate\n")
    files["missing"] = directory / "missing.pem"
    return Pki(ca, server, ca.issue_cert("kafka.invalid"), files)


# --- Checked when the settings load -------------------------------------------


def check(pki: Pki, **values: str) -> None:
    """check_kafka_security with PLAINTEXT defaults; "@name" values are pki files."""
    arguments = {
        "protocol": "PLAINTEXT",
        "mechanism": "",
        "username": "",
        "password": "",
        "cafile": "",
        "certfile": "",
        "keyfile": "",
        "key_password": "",
        "bootstrap_servers": "kafka-1:9093",
    }
    for name, value in values.items():
        arguments[name] = str(pki.files[value[1:]]) if value.startswith("@") else value
    check_kafka_security(**arguments)


SASL = {"mechanism": "SCRAM-SHA-512", "username": "eventsite", "password": "a-long-secret"}
CLIENT_CERT = {"cafile": "@ca", "certfile": "@cert", "keyfile": "@key"}


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"protocol": "PLAINTEXT", "bootstrap_servers": ""},  # the embedded broker
        {"protocol": "SSL"},  # the system's CAs
        {"protocol": "SSL", "cafile": "@ca"},
        {"protocol": "SSL", **CLIENT_CERT},
        {
            "protocol": "SSL",
            **CLIENT_CERT,
            "keyfile": "@encrypted_key",
            "key_password": KEY_PASSWORD,
        },
        {"protocol": "SASL_PLAINTEXT", **SASL, "mechanism": "PLAIN"},
        {"protocol": "SASL_SSL", **SASL, "mechanism": "SCRAM-SHA-256", "cafile": "@ca"},
        {"protocol": "SASL_SSL", **SASL, **CLIENT_CERT},
    ],
    ids=lambda values: "+".join(f"{k}={v}" for k, v in values.items()) or "defaults",
)
def test_it_accepts_settings_that_make_sense(pki: Pki, values: dict[str, str]) -> None:
    check(pki, **values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"protocol": "TLS"},
            "KAFKA_SECURITY_PROTOCOL must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, "
            "got 'TLS'",
        ),
        ({"protocol": "SSL", "bootstrap_servers": ""}, "needs KAFKA_BOOTSTRAP_SERVERS"),
        (
            {"protocol": "SASL_SSL", **SASL, "mechanism": "GSSAPI"},
            "KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 with "
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL, got 'GSSAPI'",
        ),
        ({"protocol": "SASL_SSL", **SASL, "mechanism": ""}, "got ''"),
        (
            {"protocol": "SASL_PLAINTEXT", "mechanism": "PLAIN"},
            "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs KAFKA_SASL_USERNAME and "
            "KAFKA_SASL_PASSWORD",
        ),
        ({"protocol": "SASL_SSL", **SASL, "password": ""}, "needs KAFKA_SASL_PASSWORD"),
        (
            {"protocol": "SSL", "mechanism": "PLAIN"},
            "KAFKA_SASL_MECHANISM set, but KAFKA_SECURITY_PROTOCOL=SSL has no SASL",
        ),
        (
            {"username": "eventsite", "password": "secret"},
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
            "has no SASL",
        ),
        (
            {"cafile": "@ca"},
            "KAFKA_SSL_CAFILE set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT has no TLS",
        ),
        (
            {"protocol": "SASL_PLAINTEXT", **SASL, **CLIENT_CERT},
            "KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE set, but "
            "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT has no TLS",
        ),
        ({"protocol": "SSL", "certfile": "@cert"}, "go together; got only KAFKA_SSL_CERTFILE$"),
        ({"protocol": "SSL", "keyfile": "@key"}, "go together; got only KAFKA_SSL_KEYFILE$"),
        (
            {"protocol": "SSL", "key_password": KEY_PASSWORD},
            "go together; got only KAFKA_SSL_KEY_PASSWORD$",
        ),
        ({"protocol": "SSL", "cafile": "@missing"}, "KAFKA_SSL_CAFILE: no such file '/.*missing"),
        (
            {"protocol": "SSL", **CLIENT_CERT, "keyfile": "@missing"},
            "KAFKA_SSL_KEYFILE: no such file",
        ),
        ({"protocol": "SSL", "cafile": "@garbage"}, "KAFKA_SSL_CAFILE '/.*' is not usable"),
        (
            {"protocol": "SSL", **CLIENT_CERT, "keyfile": "@server_key"},
            "are not a usable certificate and key",
        ),
        (
            {"protocol": "SSL", **CLIENT_CERT, "keyfile": "@encrypted_key"},
            "are not a usable certificate and key",
        ),
        (
            {
                "protocol": "SSL",
                **CLIENT_CERT,
                "keyfile": "@encrypted_key",
                "key_password": "wrong",
            },
            "are not a usable certificate and key",
        ),
    ],
    ids=lambda value: (
        "+".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else ""
    ),
)
def test_it_refuses_settings_that_do_not(pki: Pki, values: dict[str, str], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        check(pki, **values)


def test_the_settings_refuse_to_load_with_bad_kafka_security(pki: Pki) -> None:
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KAFKA_SECURITY", "KAFKA_SASL", "KAFKA_SSL"))
    }
    base["KAFKA_BOOTSTRAP_SERVERS"] = "kafka-1:9093"
    base["DJANGO_SETTINGS_MODULE"] = "eventsite.settings"
    good = {
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "eventsite",
        "KAFKA_SASL_PASSWORD": "a-long-secret",
        "KAFKA_SSL_CAFILE": str(pki.files["ca"]),
    }

    def manage_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=ROOT,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = manage_check({**good, "KAFKA_SASL_USERNAME": ""})
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr
    assert "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME" in refused.stderr
    accepted = manage_check(good)
    assert accepted.returncode == 0, accepted.stderr


# --- Carried by every client ----------------------------------------------------


class NotConnecting(Exception):
    """Raised instead of connecting: these tests look at clients, not at a broker."""


async def inner_clients(monkeypatch: pytest.MonkeyPatch) -> dict[str, AIOKafkaClient]:
    """The connection client inside each kind of client monitor.kafka.clients makes, unconnected."""
    made: list[Any] = []

    class Admin(AIOKafkaAdminClient):
        async def start(self) -> None:
            made.append(self)
            raise NotConnecting

    class Client(AIOKafkaClient):
        async def bootstrap(self) -> None:
            made.append(self)
            raise NotConnecting

    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", Admin)
    monkeypatch.setattr(kafka, "AIOKafkaClient", Client)
    producer = kafka.make_producer()
    consumer = kafka.make_consumer("some-topic", group_id="some-group")
    with pytest.raises(NotConnecting):
        await kafka.ensure_topics(["some-topic"])
    with pytest.raises(NotConnecting):
        await kafka.probe_broker()
    await producer.stop()
    await consumer.stop()
    admin, probe = made
    return {
        "producer": producer.client,
        "consumer": consumer._client,
        "admin (ensure_topics)": admin._client,
        "client (probe_broker)": probe,
    }


def test_every_client_carries_sasl_and_tls(settings, pki: Pki, monkeypatch) -> None:
    settings.KAFKA_SECURITY_PROTOCOL = "SASL_SSL"
    settings.KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
    settings.KAFKA_SASL_USERNAME = "eventsite"
    settings.KAFKA_SASL_PASSWORD = "a-long-secret"
    settings.KAFKA_SSL_CAFILE = str(pki.files["ca"])
    settings.KAFKA_SSL_CERTFILE = str(pki.files["cert"])
    settings.KAFKA_SSL_KEYFILE = str(pki.files["encrypted_key"])
    settings.KAFKA_SSL_KEY_PASSWORD = KEY_PASSWORD
    clients = asyncio.run(inner_clients(monkeypatch))
    ca_der = ssl.PEM_cert_to_DER_cert(pki.ca.cert_pem.bytes().decode())
    contexts = set()
    for name, client in clients.items():
        assert client._security_protocol == "SASL_SSL", name
        assert client._sasl_mechanism == "SCRAM-SHA-512", name
        assert client._sasl_plain_username == "eventsite", name
        assert client._sasl_plain_password == "a-long-secret", name
        context = client._ssl_context
        assert isinstance(context, ssl.SSLContext), name
        assert context.verify_mode == ssl.CERT_REQUIRED, name
        assert context.check_hostname, name
        assert context.get_ca_certs(binary_form=True) == [ca_der], name
        contexts.add(id(context))
    assert len(contexts) == len(clients)  # each client its own context


def test_hostname_checking_can_be_turned_off_but_not_verification(
    settings, pki: Pki, monkeypatch
) -> None:
    settings.KAFKA_SECURITY_PROTOCOL = "SSL"
    settings.KAFKA_SSL_CAFILE = str(pki.files["ca"])
    settings.KAFKA_SSL_CHECK_HOSTNAME = False
    for name, client in asyncio.run(inner_clients(monkeypatch)).items():
        assert client._security_protocol == "SSL", name
        assert not client._ssl_context.check_hostname, name
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED, name
        assert client._sasl_plain_username is None, name


def test_plaintext_clients_have_no_tls_and_no_credentials(settings, monkeypatch) -> None:
    assert settings.KAFKA_SECURITY_PROTOCOL == "PLAINTEXT"
    for name, client in asyncio.run(inner_clients(monkeypatch)).items():
        assert client._security_protocol == "PLAINTEXT", name
        assert client._ssl_context is None, name
        assert client._sasl_plain_password is None, name


CLIENTS_MODULE = ROOT / "monitor" / "kafka" / "clients.py"
CLIENT_CLASSES = {
    "AIOKafkaProducer",
    "AIOKafkaConsumer",
    "AIOKafkaAdminClient",
    "AIOKafkaClient",
    "ShiftedConsumer",
}


def kafka_clients_built(path: Path) -> list[str]:
    """Where the module at ``path`` calls an aiokafka client class, under any name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set(CLIENT_CLASSES)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aiokafka"):
            names |= {
                alias.asname
                for alias in node.names
                if alias.name in CLIENT_CLASSES and alias.asname
            }
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called in names:
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno} {called}")
    return calls


def test_no_module_but_monitor_kafka_builds_a_kafka_client() -> None:
    elsewhere = [
        call
        for package in ("monitor", "bench", "eventsite")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != CLIENTS_MODULE
        for call in kafka_clients_built(path)
    ]
    assert elsewhere == []
    # The check finds what it looks for: monitor/kafka/clients.py builds all five.
    found = {call.rsplit(" ", 1)[1] for call in kafka_clients_built(CLIENTS_MODULE)}
    assert found == CLIENT_CLASSES


# --- Real TLS to a real broker ----------------------------------------------------


@dataclass(frozen=True)
class TlsBroker:
    """The embedded broker on a plaintext port, advertising the TLS proxy's port."""

    port: int
    tls_port: int


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[TlsBroker]:
    port, tls_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            broker_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{tls_port}",
            "--cluster-id",
            f"tls-{uuid.uuid4().hex[:12]}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, "the broker exited"
                assert time.monotonic() < deadline, "the broker is not listening"
                time.sleep(0.05)
        yield TlsBroker(port, tls_port)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class TlsProxy:
    """A TLS listener forwarding the decrypted bytes to the broker's plaintext port,
    as a TLS-terminating load balancer in front of Kafka would. It requires a client
    certificate signed by the CA; it records the common name on each client
    certificate, and why each refused handshake failed."""

    def __init__(self, port: int, broker_port: int, pki: Pki, certificate: trustme.LeafCert):
        self.port = port
        self.broker_port = broker_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(self.context)
        pki.ca.configure_trust(self.context)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.clients: list[str] = []
        self.refusals: list[str] = []
        self.connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TlsProxy:
        self.server = await asyncio.start_server(self.forward, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        await self.server.wait_closed()

    async def forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await writer.start_tls(self.context)
        except (ssl.SSLError, ConnectionError) as error:
            self.refusals.append(str(error))
            writer.close()
            return
        certificate = writer.get_extra_info("peercert")
        self.clients.append(
            dict(field for rdn in certificate["subject"] for field in rdn)["commonName"]
        )
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        try:
            await asyncio.gather(pipe(reader, broker_writer), pipe(broker_reader, writer))
        finally:
            broker_writer.close()
            writer.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def use_tls(settings, pki: Pki, port: int, *, ca: str = "ca", client_cert: bool = True) -> None:
    """Connect with SSL to 127.0.0.1:``port``, trusting pki file ``ca``."""
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{port}"
    settings.KAFKA_SECURITY_PROTOCOL = "SSL"
    settings.KAFKA_SSL_CAFILE = str(pki.files[ca])
    if client_cert:
        settings.KAFKA_SSL_CERTFILE = str(pki.files["cert"])
        settings.KAFKA_SSL_KEYFILE = str(pki.files["key"])


def test_the_projects_clients_produce_and_consume_over_tls(
    settings, topics, pki: Pki, tls_broker: TlsBroker
) -> None:
    use_tls(settings, pki, tls_broker.tls_port)
    topic = topics[0]

    async def scenario() -> tuple[Any, list[Any], list[str]]:
        async with TlsProxy(tls_broker.tls_port, tls_broker.port, pki, pki.server) as proxy:
            await kafka.probe_broker()
            await kafka.ensure_topics()
            producer = kafka.make_producer()
            await producer.start()
            try:
                sent = await producer.send_and_wait(topic, b"over tls", key=b"k")
            finally:
                await producer.stop()
            return sent, await read_all(topic, 1), proxy.clients

    sent, records, clients = asyncio.run(scenario())
    assert [(r.partition, r.offset, r.key, r.value) for r in records] == [
        (sent.partition, sent.offset, b"k", b"over tls")
    ]
    # Every connection (admin, producer, consumer) came through TLS with the client certificate.
    assert len(clients) >= 3
    assert set(clients) == {"eventsite-client"}


async def refused(proxy: TlsProxy) -> TlsProxy:
    """Try the probe and a producer through ``proxy``; both must fail to connect."""
    async with proxy:
        with pytest.raises(KafkaConnectionError):
            await kafka.probe_broker()
        producer = kafka.make_producer()
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()
    return proxy


def test_a_client_that_does_not_trust_the_brokers_ca_cannot_connect(
    settings, pki: Pki, tls_broker: TlsBroker, caplog
) -> None:
    use_tls(settings, pki, tls_broker.tls_port, ca="other_ca")
    proxy = asyncio.run(refused(TlsProxy(tls_broker.tls_port, tls_broker.port, pki, pki.server)))
    assert proxy.clients == []
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_a_client_without_its_certificate_is_refused(
    settings, pki: Pki, tls_broker: TlsBroker
) -> None:
    use_tls(settings, pki, tls_broker.tls_port, client_cert=False)
    proxy = asyncio.run(refused(TlsProxy(tls_broker.tls_port, tls_broker.port, pki, pki.server)))
    assert proxy.clients == []
    assert proxy.refusals
    assert all("PEER_DID_NOT_RETURN_A_CERTIFICATE" in refusal for refusal in proxy.refusals)


def test_a_plaintext_client_cannot_talk_to_a_tls_listener(
    settings, pki: Pki, tls_broker: TlsBroker
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{tls_broker.tls_port}"
    proxy = asyncio.run(refused(TlsProxy(tls_broker.tls_port, tls_broker.port, pki, pki.server)))
    assert proxy.clients == []
    assert proxy.refusals
    # The listener read a Kafka request where it expected a TLS handshake.
    assert all("WRONG_VERSION_NUMBER" in refusal for refusal in proxy.refusals)


def test_hostname_checking_refuses_a_certificate_for_another_host(
    settings, pki: Pki, tls_broker: TlsBroker, caplog
) -> None:
    port = free_port()
    use_tls(settings, pki, port)

    async def probe() -> None:
        async with TlsProxy(port, tls_broker.port, pki, pki.misnamed_server):
            await kafka.probe_broker()

    with pytest.raises(KafkaConnectionError):
        asyncio.run(probe())
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert "mismatch" in caplog.text
    settings.KAFKA_SSL_CHECK_HOSTNAME = False
    asyncio.run(probe())  # the same certificate, still signed by the CA
