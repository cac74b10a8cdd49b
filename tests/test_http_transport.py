"""The client's own HTTP/1.1 (sttwatch/backends/http.py) against real servers on 127.0.0.1:
a TLS one with a certificate from a test CA, and a scripted one that answers with raw bytes
(chunked, gzip, up to the close, cut short, closing its kept-alive connections)."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from conftest import wait_for
from fake_service import make_fake_audio

from sttwatch.backends import Request, TaskState
from sttwatch.backends.aimlapi import AimlApiBackend
from sttwatch.errors import OutcomeUnknown, SttwatchError, TransientError

KEY = "sk-aiml-7Hq2ZtW9xK4mP0sV"
MODEL = "#g1_whisper-tiny"
DONE = json.dumps({"status": "completed", "result": {"results": {"channels": [
    {"alternatives": [{"transcript": "hello there"}]}]}}}).encode()
CREATED = json.dumps({"generation_id": "g-1"}).encode()

# What the scripted server sends for one request: the raw answer, and whether it closes the
# connection after it.
Script = Callable[[bytes], tuple[bytes, bool]]


def answer(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Server:
    """A threaded server on 127.0.0.1 that reads whole requests (head and Content-Length
    body) and answers each as the script says; TLS when given a context."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                request, buf = head + b"\r\n\r\n" + buf[:length], buf[length:]
                with self.lock:
                    self.requests.append(request)
                raw, close = self.script(request)
                conn.sendall(raw)
                if close:
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()
            with self.lock:
                self.closed += 1

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/v1"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(script: Script, tls: ssl.SSLContext | None = None) -> Server:
        servers.append(Server(script, tls))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def backend_for() -> Iterator[Callable[..., AimlApiBackend]]:
    made: list[AimlApiBackend] = []

    def make(url: str, sleeps: list[float] | None = None) -> AimlApiBackend:
        made.append(AimlApiBackend(url, KEY, MODEL, connect_timeout=2.0, read_timeout=5.0,
                                   retries=2, sleep=(sleeps if sleeps is not None
                                                     else []).append))
        return made[-1]

    yield make
    for b in made:
        b.close()


def upload(tmp_path: Path) -> Request:
    return Request(job_id=7, model=MODEL, path=make_fake_audio(tmp_path / "talk.wav",
                                                               "hello there"))


def raised(exc_type: type[SttwatchError], call: Callable[[], object]) -> SttwatchError:
    with pytest.raises(exc_type) as info:
        call()
    assert KEY not in str(info.value)
    return info.value


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def served_by(ca: trustme.CA) -> ssl.SSLContext:
    """A server's TLS context with a certificate for localhost from ``ca``."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(tls)
    return tls


def test_fetches_over_tls_are_verified_and_share_one_connection(
        serve: Callable[..., Server], backend_for: Callable[..., AimlApiBackend],
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(lambda req: (answer(DONE), False), served_by(ca))
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    backend = backend_for(server.url("localhost", "https"))
    assert backend.fetch("g-1").state is TaskState.DONE
    assert backend.fetch("g-1").state is TaskState.DONE
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /v1/stt/g-1 HTTP/1.1\r\n")
    assert f"Authorization: Bearer {KEY}".encode() in server.requests[0]


def test_a_service_whose_certificate_is_not_trusted_never_gets_the_create(
        serve: Callable[..., Server], backend_for: Callable[..., AimlApiBackend],
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(lambda req: (answer(CREATED), False), served_by(ca))
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    backend = backend_for(server.url("localhost", "https"))
    exc = raised(TransientError, lambda: backend.create(upload(tmp_path)))
    assert not isinstance(exc, OutcomeUnknown)  # nothing was sent: the create may go again
    assert "connection failed" in str(exc)
    assert server.requests == []


def test_chunked_gzip_and_close_delimited_answers_are_read_whole(
        serve: Callable[..., Server], backend_for: Callable[..., AimlApiBackend]) -> None:
    half = len(DONE) // 2
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + f"{half:x}\r\n".encode() + DONE[:half] + b"\r\n"
               + f"{len(DONE) - half:x};ext=1\r\n".encode() + DONE[half:] + b"\r\n"
               + b"0\r\nX-Trailer: yes\r\n\r\n")
    zipped = gzip.compress(DONE)
    answers = [(chunked, False), (answer(zipped, "Content-Encoding: gzip"), False),
               (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + DONE, True)]
    server = serve(lambda req: answers.pop(0))
    backend = backend_for(server.url())
    for _ in range(3):
        status = backend.fetch("g-1")
        assert status.state is TaskState.DONE
        assert status.result == json.loads(DONE)["result"]
    assert server.connections == 1  # kept alive through chunked and gzip; closed by the last


def test_an_answer_cut_short_leaves_a_create_unknown_and_a_fetch_retried(
        serve: Callable[..., Server], backend_for: Callable[..., AimlApiBackend],
        tmp_path: Path) -> None:
    cut = answer(CREATED)[:-5]
    server = serve(lambda req: (cut, True))
    sleeps: list[float] = []
    backend = backend_for(server.url(), sleeps)
    exc = raised(OutcomeUnknown, lambda: backend.create(upload(tmp_path)))
    assert "after sending" in str(exc)
    assert len(server.requests) == 1  # an unknown outcome is never sent again blindly
    raised(TransientError, lambda: backend.fetch("g-1"))
    assert len(sleeps) == 1  # the fetch was tried again once (retries=2)


def test_a_connection_the_service_closed_while_idle_is_not_used_again(
        serve: Callable[..., Server], backend_for: Callable[..., AimlApiBackend],
        tmp_path: Path) -> None:
    # Keep-alive answers, but the service drops each connection right after (an idle
    # timeout): the next request must go on a new connection, not fail on the old one.
    server = serve(lambda req: (answer(CREATED if req.startswith(b"POST") else DONE), True))
    sleeps: list[float] = []
    backend = backend_for(server.url(), sleeps)
    for i in range(3):
        assert backend.create(upload(tmp_path)).generation_id == "g-1"
        wait_for(lambda n=i: server.closed == 2 * n + 1, timeout=10)
        assert backend.fetch("g-1").state is TaskState.DONE
        wait_for(lambda n=i: server.closed == 2 * n + 2, timeout=10)
    assert sleeps == []  # no request failed, none was retried
    assert server.connections == 6 and len(server.requests) == 6
