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
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


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
    security settings make sense together; the TLS files are loaded to be sure.

    The checks run in a fixed order (protocol, SASL, TLS variables, TLS files),
    so a process with several mistakes always reports the same one first.
    """
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
    check_protocol(protocol, bootstrap_servers=bootstrap_servers)
    if protocol in SASL_PROTOCOLS:
        check_sasl(protocol, sasl)
    else:
        refuse_ignored(
            sasl, f"KAFKA_SECURITY_PROTOCOL={protocol} has no SASL: use SASL_PLAINTEXT or SASL_SSL"
        )
    if protocol not in TLS_PROTOCOLS:
        refuse_ignored(tls, f"KAFKA_SECURITY_PROTOCOL={protocol} has no TLS: use SSL or SASL_SSL")
        return
    check_tls_variables(tls)
    check_tls_files(cafile=cafile, certfile=certfile, keyfile=keyfile, key_password=key_password)


def check_protocol(protocol: str, *, bootstrap_servers: str) -> None:
    """A known protocol, and anything but PLAINTEXT only with a broker of one's own."""
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


def refuse_ignored(variables: dict[str, str], why: str) -> None:
    """Refuse variables that are set although the protocol would ignore them."""
    if ignored := [name for name, value in variables.items() if value]:
        raise ImproperlyConfigured(f"{', '.join(ignored)} set, but {why}")


def check_sasl(protocol: str, sasl: dict[str, str]) -> None:
    """A SASL protocol needs a known mechanism, a username and a password."""
    mechanism = sasl["KAFKA_SASL_MECHANISM"]
    if mechanism not in KAFKA_SASL_MECHANISMS:
        raise ImproperlyConfigured(
            f"KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)} "
            f"with KAFKA_SECURITY_PROTOCOL={protocol}, got {mechanism!r}"
        )
    if missing := [name for name, value in sasl.items() if not value]:
        raise ImproperlyConfigured(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}"
        )


def check_tls_variables(tls: dict[str, str]) -> None:
    """A client certificate comes with its key (and the key's password only with
    a key), and every file named exists."""
    certfile, keyfile = tls["KAFKA_SSL_CERTFILE"], tls["KAFKA_SSL_KEYFILE"]
    if bool(certfile) != bool(keyfile) or (tls["KAFKA_SSL_KEY_PASSWORD"] and not keyfile):
        raise ImproperlyConfigured(
            "KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE (the client certificate and its key, "
            "and KAFKA_SSL_KEY_PASSWORD if the key is encrypted) go together; got only "
            + ", ".join(name for name, value in tls.items() if value)
        )
    for name, path in tls.items():
        if path and name != "KAFKA_SSL_KEY_PASSWORD" and not Path(path).is_file():
            raise ImproperlyConfigured(f"{name}: no such file {path!r}")


def check_tls_files(*, cafile: str, certfile: str, keyfile: str, key_password: str) -> None:
    """Load the CA file (or the system's CAs) and the client certificate and key,
    as a TLS connection will."""
    try:
        context = ssl.create_default_context(cafile=cafile or None)
    except ssl.SSLError as error:
        raise ImproperlyConfigured(f"KAFKA_SSL_CAFILE {cafile!r} is not usable: {error}") from None
    if not certfile:
        return
    try:
        # A callable, so that OpenSSL never prompts on the terminal for a key password.
        context.load_cert_chain(certfile, keyfile, password=lambda: key_password)
    except ssl.SSLError as error:
        raise ImproperlyConfigured(
            f"KAFKA_SSL_CERTFILE {certfile!r} and KAFKA_SSL_KEYFILE {keyfile!r} are not a "
            f"usable certificate and key (KAFKA_SSL_KEY_PASSWORD if encrypted): {error}"
        ) from None
