"""How the AI/ML API client's requests travel: a small HTTP/1.1 client of our own for a
direct connection, urllib3's managers through a proxy.

A daemon makes two requests per file, small JSON answers on kept-alive connections to one
origin. urllib3 over ``http.client`` spent about 0.5 ms of CPU on each (its header parsing
goes through the ``email`` package), more than the rest of a fetch; the ``Direct`` client
below writes a request in one buffer and reads the answer with a few ``bytes`` operations
(``python bench/http_cpu.py``). It speaks what a JSON API answers with: Content-Length,
chunked, or a body up to the close; gzip and deflate bodies; HTTP/1.0 and ``Connection:
close``; TLS verified against the CA bundle requests would use. A proxy (the environment's,
``no_proxy`` honoured) is left to urllib3, which knows CONNECT tunnels and SOCKS.

Every failure is one of two types, because a create's fate depends on it: ``NotSent`` when
no byte of the request can have reached the service (the connection or its TLS handshake
failed), so a create may go again; ``Broken`` when it may have (a reset, a timeout, an
answer cut short), so a create's task may exist. A body may be an iterable of blocks (an
upload streamed from its file, multipart.py): the first goes out with the head.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import getproxies_environment

import certifi

from .. import __version__

USER_AGENT = f"sttwatch/{__version__}"
MAX_HEAD = 64 << 10  # an answer's status line and headers: a JSON API's are a few hundred bytes
READ_SIZE = 64 << 10


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, whole."""

    status: int
    reason: str
    headers: Mapping[str, str]  # lower-case names; a repeated header's values joined by ", "
    body: bytes


class TransportError(Exception):
    """A request that got no answer. ``what`` says how, in the words the logs use."""

    def __init__(self, what: str, cause: str) -> None:
        super().__init__(f"{what}: {cause}")
        self.what = what
        self.cause = cause


class NotSent(TransportError):
    """No byte of the request can have reached the service: the connection (or its TLS
    handshake) failed or timed out."""


class Broken(TransportError):
    """The request may have reached the service, but no whole answer came back."""


class Transport(Protocol):
    def request(self, method: str, path: str, headers: Mapping[str, str],
                body: bytes | Iterable[bytes] | None, length: int,
                timeouts: tuple[float, float]) -> Reply: ...

    def close(self) -> None: ...


def _what(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else "connection failed"


def ca_bundle() -> str:
    """The CA bundle requests would verify with: ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``,
    else certifi's (a file, or a directory of hashed certificates)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or \
        certifi.where()


def _tls_context() -> ssl.SSLContext:
    ca = ca_bundle()
    ctx = ssl.create_default_context(capath=ca) if os.path.isdir(ca) else \
        ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class _Connection:
    """One kept-alive connection and what has been read from it beyond the last answer."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None,
                 timeout: float) -> None:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise NotSent(_what(exc), type(exc).__name__) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
        except OSError as exc:  # a certificate we do not trust, a handshake cut off
            sock.close()
            raise NotSent(_what(exc), type(exc).__name__) from None
        self.sock = sock
        self.buf = bytearray()

    def dropped(self) -> bool:
        """Closed by the service while idle (or holding bytes nobody asked for): readable
        before a request is sent means either."""
        if self.buf:
            return True
        p = select.poll()
        p.register(self.sock, select.POLLIN)
        return bool(p.poll(0))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, head: bytes, body: bytes | Iterable[bytes] | None) -> None:
        """The request's head and body; the first block of the body goes with the head."""
        if body is None or isinstance(body, (bytes, bytearray)):
            self.sock.sendall(head + (body or b""))
            return
        pending = head
        for block in body:
            if pending:
                block, pending = pending + block, b""
            self.sock.sendall(block)
        if pending:
            self.sock.sendall(pending)

    def _fill(self) -> None:
        data = self.sock.recv(READ_SIZE)
        if not data:
            raise ConnectionResetError("the service closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("a line too long in the answer")
            self._fill()
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read(self, method: str) -> tuple[Reply, bool]:
        """The answer, and whether the connection may carry another request."""
        while True:
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                if len(self.buf) > MAX_HEAD:
                    raise ValueError("the answer's headers are too long")
                self._fill()
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[:end + 4]
            version, _, rest = head[0].partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/") or not code.isdigit():
                raise ValueError(f"not an HTTP answer: {head[0][:80]!r}")
            status = int(code)
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue): the real one follows
            break
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        connection = headers.get("connection", "").lower()
        keep = "close" not in connection and (version != "HTTP/1.0" or
                                              "keep-alive" in connection)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"].split(",")[0]))
        else:  # delimited by the close
            while True:
                data = self.sock.recv(READ_SIZE)
                if not data:
                    break
                self.buf += data
            body, keep = bytes(self.buf), False
            self.buf.clear()
        encoding = headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            body = zlib.decompress(body, 47 if encoding != "deflate" else
                                   (15 if body[:1] == b"\x78" else -15))
        return Reply(status, reason, headers, body), keep

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self._line().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            self._exactly(2)  # the chunk's CRLF


class Direct:
    """Kept-alive connections to one origin (``http`` or ``https``), shared by every
    thread: a request takes an idle one (a connection the service closed meanwhile is
    dropped, not used) or opens one, and gives it back after a whole answer."""

    def __init__(self, base_url: str, maxsize: int = 8) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        default = self._port == (443 if parts.scheme == "https" else 80)
        name = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = name if default else f"{name}:{self._port}"
        self._prefix = parts.path.rstrip("/")
        self._tls = _tls_context() if parts.scheme == "https" else None
        self._maxsize = maxsize
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._generation = 0

    def _take(self, timeout: float) -> tuple[_Connection, int]:
        with self._lock:
            generation = self._generation
            while self._idle:
                conn = self._idle.pop()
                if not conn.dropped():
                    return conn, generation
                conn.close()
        return _Connection(self._host, self._port, self._tls, timeout), generation

    def _give_back(self, conn: _Connection, generation: int) -> None:
        with self._lock:
            if generation == self._generation and len(self._idle) < self._maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def request(self, method: str, path: str, headers: Mapping[str, str],
                body: bytes | Iterable[bytes] | None, length: int,
                timeouts: tuple[float, float]) -> Reply:
        target = self._prefix + path
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}",
                 f"User-Agent: {USER_AGENT}", "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {length}")
        if any("\n" in line or "\r" in line for line in lines):
            raise ValueError("a header or the path holds a line break")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        conn, generation = self._take(timeouts[0])
        keep = False
        try:
            # While the body goes out, each write may take up to the connect timeout; the
            # answer may then take the read timeout (an upload's grows with its size).
            conn.sock.settimeout(timeouts[0])
            conn.send(head, body)
            conn.sock.settimeout(timeouts[1])
            reply, keep = conn.read(method)
            return reply
        except (OSError, ValueError, zlib.error) as exc:
            raise Broken(_what(exc), type(exc).__name__) from None
        finally:
            if keep:
                self._give_back(conn, generation)
            else:
                conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for conn in idle:
            conn.close()


class ViaProxy:
    """Requests through the proxy the environment names, by urllib3 (whole URLs to an HTTP
    proxy, a CONNECT tunnel for https, SOCKS)."""

    def __init__(self, base_url: str, proxy: str, maxsize: int = 8) -> None:
        import urllib3  # only a proxied daemon needs it
        from requests.utils import get_auth_from_url

        self._base = base_url.rstrip("/")
        ca = ca_bundle()
        kwargs: dict[str, Any] = {"maxsize": maxsize, "cert_reqs": "CERT_REQUIRED",
                                  "retries": False,
                                  "ca_cert_dir" if os.path.isdir(ca) else "ca_certs": ca}
        user, password = get_auth_from_url(proxy)
        self._manager: Any
        if proxy.lower().startswith("socks"):
            from urllib3.contrib.socks import SOCKSProxyManager
            self._manager = SOCKSProxyManager(proxy, username=user or None,
                                              password=password or None, **kwargs)
        else:
            auth = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user \
                else None
            self._manager = urllib3.ProxyManager(proxy, proxy_headers=auth, **kwargs)

    def request(self, method: str, path: str, headers: Mapping[str, str],
                body: bytes | Iterable[bytes] | None, length: int,
                timeouts: tuple[float, float]) -> Reply:
        import urllib3

        sized = {**headers, "User-Agent": USER_AGENT}
        if body is not None:
            sized["Content-Length"] = str(length)
        try:
            resp = self._manager.urlopen(
                method, self._base + path, body=body, headers=sized,
                timeout=urllib3.Timeout(connect=timeouts[0], read=timeouts[1]),
                retries=False, redirect=False, assert_same_host=False, preload_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # (urllib3's NewConnectionError is a kind of ConnectTimeoutError: asked first.)
            refused = isinstance(exc, urllib3.exceptions.NewConnectionError)
            what = "connection failed" if refused or isinstance(exc, (
                urllib3.exceptions.ProtocolError, ConnectionError)) else "timed out" \
                if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) \
                else "request failed"
            kind = NotSent if isinstance(exc, urllib3.exceptions.ConnectTimeoutError) \
                else Broken
            raise kind(what, type(exc).__name__) from None
        return Reply(resp.status, resp.reason or "",
                     {k.lower(): v for k, v in resp.headers.items()}, resp.data)

    def close(self) -> None:
        self._manager.clear()


def transport_for(base_url: str, maxsize: int = 8) -> Transport:
    """The way to ``base_url``: through the proxy the environment names for it
    (``no_proxy`` honoured, as requests reads it), else directly. Read once, not per
    request."""
    if not getproxies_environment():  # no proxy set at all: requests need not be loaded
        return Direct(base_url, maxsize)
    from requests.utils import get_environ_proxies

    proxies = get_environ_proxies(base_url)
    proxy = proxies.get(urlsplit(base_url).scheme) or proxies.get("all")
    return ViaProxy(base_url, proxy, maxsize) if proxy else Direct(base_url, maxsize)
