"""Opt-in image fetching by URL, hardened against server-side request forgery.

A URL in an event is attacker-controlled, so fetching (off by default) only goes to allowlisted
hosts, resolves the name itself and refuses private, loopback, link-local and other non-global
addresses (unless explicitly allowed), then connects to the address it checked (no second DNS
lookup to rebind), and caps size, time and redirects (each hop is checked again).

The time cap is one deadline for the whole request (connect, TLS handshake, headers, body and
every redirect hop): each socket operation gets only the time left, so a server that trickles
a byte at a time cannot stretch a per-read timeout into an unbounded fetch. Name resolution
(``getaddrinfo``) has no timeout of its own; the per-batch budget of
:class:`stream.images.source.BatchLoader` bounds what it can cost the worker.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

from stream.images.decode import ImageError

__all__ = ["FetchPolicy", "check_address", "fetch_url", "host_allowed"]

_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class FetchPolicy:
    """``allow_hosts``: exact host names, ``.example.org`` / ``*.example.org`` for subdomains,
    or ``*`` for any host (non-global addresses stay refused unless ``allow_private``)."""

    allow_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    timeout_s: float = 5.0
    max_bytes: int = 10_000_000
    max_redirects: int = 3


def host_allowed(host: str, allow_hosts: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allow_hosts:
        entry = entry.lower().strip().rstrip(".")
        if entry == "*" or entry == host:
            return True
        suffix = entry[1:] if entry.startswith("*.") else entry
        if suffix.startswith(".") and host.endswith(suffix):
            return True
    return False


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, still routed inside some sites
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 prefix
_EMBEDS_LOW_32 = (  # IPv6 forms whose low 32 bits are an IPv4 address
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated)
    ipaddress.ip_network("::ffff:0:0:0/96"),  # SIIT IPv4-translated
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64 well-known prefix
)


def _forms(ip: IPAddress) -> list[IPAddress]:
    """The address and, for IPv6 forms that carry one, the IPv4 address it reaches."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return [ip]
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    embedded: list[IPAddress] = [ip]
    if ip.sixtofour is not None:
        embedded.append(ip.sixtofour)
    if ip.teredo is not None:
        embedded.extend(ip.teredo)
    if any(ip in net for net in _EMBEDS_LOW_32):
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return embedded


def _is_global(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and (ip in _SITE_LOCAL or ip in _NAT64_LOCAL):
        return False
    return ip.is_global


def check_address(ip_text: str, allow_private: bool, host: str = "") -> IPAddress:
    """Parse a resolved address and refuse it unless it is a global unicast address.

    IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are
    judged by that IPv4 address as well. The refusal names ``host``, never the address, so
    an event's ``image_error`` does not publish what an internal name resolves to.
    """
    ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
    name = f"host {host}" if host else "the host"
    forms = _forms(ip)
    for form in forms:
        if form.is_unspecified or form.is_multicast:
            raise ImageError("fetch_refused", f"{name} does not resolve to a unicast address")
        if not allow_private and not _is_global(form):
            raise ImageError(
                "fetch_refused",
                f"{name} resolves to a private, loopback, link-local or reserved address "
                "(CRISIS_IMAGE_FETCH_ALLOW_PRIVATE to allow)",
            )
    return forms[0]


def _resolve(host: str, port: int, allow_private: bool) -> str:
    try:
        name = host.encode("idna").decode("ascii")  # what getaddrinfo would do, checked here
    except UnicodeError as exc:
        raise ImageError("bad_url", f"host {host[:80]!r} is not a valid name: {exc}") from exc
    if "\x00" in name:
        raise ImageError("bad_url", f"host {host[:80]!r} is not a valid name")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise ImageError("fetch_failed", f"cannot resolve {host}: {exc}") from exc
    if not infos:
        raise ImageError("fetch_failed", f"{host} has no address")
    # every address must pass: a name that also points inside the network is refused
    checked = [check_address(str(info[4][0]), allow_private, host) for info in infos]
    return str(checked[0])


class _Deadline:
    """Socket mixin: every blocking call may use only the time left until ``deadline``.

    ``http.client`` reads through ``makefile()``, whose reads end in ``recv_into``; setting the
    timeout to the remaining time before each call turns per-read timeouts into one deadline.
    """

    deadline: float = float("inf")

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self.settimeout(remaining)  # type: ignore[attr-defined]

    def recv(self, *args: Any) -> Any:
        self._arm()
        return super().recv(*args)  # type: ignore[misc]

    def recv_into(self, *args: Any) -> Any:
        self._arm()
        return super().recv_into(*args)  # type: ignore[misc]

    def send(self, *args: Any) -> Any:
        self._arm()
        return super().send(*args)  # type: ignore[misc]

    def sendall(self, *args: Any) -> Any:
        self._arm()
        return super().sendall(*args)  # type: ignore[misc]


class _DeadlineSocket(_Deadline, socket.socket):
    pass


class _DeadlineSSLSocket(_Deadline, ssl.SSLSocket):
    def do_handshake(self, *args: Any) -> None:
        self._arm()  # the handshake's retry loop treats the socket timeout as its deadline
        super().do_handshake(*args)


def _connect(ip: str, port: int, deadline: float) -> _DeadlineSocket:
    """A TCP connection to an already checked address, every operation within ``deadline``."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = _DeadlineSocket(family, socket.SOCK_STREAM)
    sock.deadline = deadline
    try:
        sock._arm()
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to an address that was already checked, sends the URL's host name."""

    def __init__(self, host: str, port: int, ip: str, deadline: float) -> None:
        super().__init__(host, port)
        self._ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _connect(self._ip, self.port, self._deadline)


class _PinnedHTTPS(_PinnedHTTP):
    default_port = http.client.HTTPS_PORT  # so the Host header omits :443, as it should

    def connect(self) -> None:
        raw = _connect(self._ip, self.port, self._deadline)
        tls = ssl.create_default_context()
        tls.sslsocket_class = _DeadlineSSLSocket
        try:
            sock = tls.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=False)
        except BaseException:
            raw.close()
            raise
        assert isinstance(sock, _DeadlineSSLSocket)
        sock.deadline = self._deadline
        try:
            sock.do_handshake()
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _split(url: str) -> tuple[SplitResult, str, int]:
    """The URL's parts, host and port; a malformed URL is an ImageError, never a ValueError."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError as exc:  # a bad IPv6 literal, a port that is not a number or too large
        raise ImageError("bad_url", f"malformed URL {url[:80]!r}: {exc}") from exc
    if scheme not in ("http", "https") or not host:
        raise ImageError("fetch_refused", f"only http(s) URLs can be fetched, not {url[:80]!r}")
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise ImageError("bad_url", f"URL {url[:80]!r} contains control characters or spaces")
    return parts, host, port or (443 if scheme == "https" else 80)


def _time_left(deadline: float, policy: FetchPolicy) -> float:
    """Seconds until ``deadline``; a fetch past it has timed out."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ImageError("fetch_failed", f"timed out after {policy.timeout_s}s")
    return remaining


def _request_path(parts: SplitResult) -> str:
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return path


def _read_body(
    resp: http.client.HTTPResponse,
    policy: FetchPolicy,
    deadline: float,
) -> bytes:
    """The response body, read within the deadline and at most ``policy.max_bytes`` long."""
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and int(length) > policy.max_bytes:
        raise ImageError(
            "too_large", f"Content-Length {length} exceeds the {policy.max_bytes} byte limit"
        )
    chunks: list[bytes] = []
    total = 0
    while True:
        _time_left(deadline, policy)  # the socket enforces it too, within each read
        chunk = resp.read1(65536)
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise ImageError("too_large", f"response exceeds the {policy.max_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _get(url: str, policy: FetchPolicy, deadline: float) -> tuple[int, str | None, bytes]:
    parts, host, port = _split(url)
    if not host_allowed(host, policy.allow_hosts):
        raise ImageError("fetch_refused", f"host {host} is not in CRISIS_IMAGE_FETCH_ALLOW_HOSTS")
    ip = _resolve(host, port, policy.allow_private)
    _time_left(deadline, policy)
    conn_type = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = conn_type(host, port, ip, deadline)
    try:
        headers = {"User-Agent": "crisis-stream", "Accept": "image/*"}
        conn.request("GET", _request_path(parts), headers=headers)
        resp = conn.getresponse()
        if resp.status in _REDIRECTS:
            return resp.status, resp.getheader("Location"), b""
        if resp.status != 200:
            raise ImageError("fetch_failed", f"HTTP {resp.status} from {host}")
        return 200, None, _read_body(resp, policy, deadline)
    except TimeoutError as exc:
        raise ImageError("fetch_failed", f"{host}: timed out after {policy.timeout_s}s") from exc
    except (OSError, http.client.HTTPException, UnicodeError, ValueError) as exc:
        raise ImageError("fetch_failed", f"{host}: {exc or type(exc).__name__}") from exc
    finally:
        conn.close()


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """GET ``url`` within ``policy``; raises :class:`ImageError` with the reason otherwise."""
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(policy.max_redirects + 1):
        status, location, body = _get(url, policy, deadline)
        if status == 200:
            return body
        if not location:
            raise ImageError("fetch_failed", f"HTTP {status} without a Location header")
        try:
            url = urljoin(url, location)
        except ValueError as exc:
            raise ImageError("bad_url", f"malformed redirect {location[:80]!r}: {exc}") from exc
    raise ImageError("fetch_failed", f"more than {policy.max_redirects} redirects")
