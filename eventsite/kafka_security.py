"""Checking the Kafka security settings together, when the settings load.

A wrong or ignored setting (a SASL password with a plaintext protocol, a
certificate without its key, a file that does not load) stops the process at
start with a message naming the variables, instead of failing, or leaking, at
the first connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def check_kafka_security(
    *,
    protocol: str,
    mechanism: str,
    username: str,
    password: str,
    cafile: str,
    certfile: str,
    keyfile: str,
    key_password: str,
    bootstrap_servers: str,
) -> None:
    """Raise ImproperlyConfigured, naming the variables, unless the Kafka
    security settings make sense together; the TLS files are loaded to be sure."""

    sasl = {
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": username,
        "KAFKA_SASL_PASSWORD": password,
    }
    tls = {
        "KAFKA_SSL_CAFILE": cafile,
        "KAFKA_SSL_CERTFILE": certfile,
        "KAFKA_SSL_KEYFILE": keyfile,
        "KAFKA_SSL_KEY_PASSWORD": key_password,
    }
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ImproperlyConfigured(
            f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
            f"got {protocol!r}"
        )
    if protocol != "PLAINTEXT" and not bootstrap_servers:
        raise ImproperlyConfigured(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_BOOTSTRAP_SERVERS: "
            "the embedded broker speaks PLAINTEXT only"
        )
    if not protocol.startswith("SASL_"):
        if ignored := [name for name, value in sasl.items() if value]:
            raise ImproperlyConfigured(
                f"{', '.join(ignored)} set, but KAFKA_SECURITY_PROTOCOL={protocol} has no "
                "SASL: use SASL_PLAINTEXT or SASL_SSL"
            )
    elif mechanism not in KAFKA_SASL_MECHANISMS:
        raise ImproperlyConfigured(
            f"KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)} "
            f"with KAFKA_SECURITY_PROTOCOL={protocol}, got {mechanism!r}"
        )
    elif missing := [name for name, value in sasl.items() if not value]:
        raise ImproperlyConfigured(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}"
        )
    if protocol not in ("SSL", "SASL_SSL"):
        if ignored := [name for name, value in tls.items() if value]:
            raise ImproperlyConfigured(
                f"{', '.join(ignored)} set, but KAFKA_SECURITY_PROTOCOL={protocol} has no "
                "TLS: use SSL or SASL_SSL"
            )
        return
    if bool(certfile) != bool(keyfile) or (key_password and not keyfile):
        raise ImproperlyConfigured(
            "KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE (the client certificate and its key, "
            "and KAFKA_SSL_KEY_PASSWORD if the key is encrypted) go together; got only "
            + ", ".join(name for name, value in tls.items() if value)
        )
    for name, path in tls.items():
        if path and name != "KAFKA_SSL_KEY_PASSWORD" and not Path(path).is_file():
            raise ImproperlyConfigured(f"{name}: no such file {path!r}")
    try:
        context = ssl.create_default_context(cafile=cafile or None)
    except ssl.SSLError as error:
        raise ImproperlyConfigured(f"KAFKA_SSL_CAFILE {cafile!r} is not usable: {error}") from None
    if certfile:
        try:
            # A callable, so that OpenSSL never prompts on the terminal for a key password.
            context.load_cert_chain(certfile, keyfile, password=lambda: key_password)
        except ssl.SSLError as error:
            raise ImproperlyConfigured(
                f"KAFKA_SSL_CERTFILE {certfile!r} and KAFKA_SSL_KEYFILE {keyfile!r} are not a "
                f"usable certificate and key (KAFKA_SSL_KEY_PASSWORD if encrypted): {error}"
            ) from None
