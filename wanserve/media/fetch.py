"""The one guarded fetcher every client-supplied URL goes through.

A public server fetches URLs strangers send it, so each fetch:

* accepts only http and https, and follows at most `max_redirects` redirects, checking every
  hop like the first;
* resolves the host itself and connects only to an address it has checked (no second DNS
  lookup for an attacker to rebind): private, loopback, link-local, multicast, reserved and
  cloud-metadata addresses are refused unless the operator allows private networks or names
  the host in `allowed_hosts`; metadata addresses are refused always;
* bounds DNS, connect, each read and the whole transfer by time, and the body by size (the
  declared Content-Length first, then the bytes actually streamed);
* checks the declared content type against what the field expects;
* ignores proxy environment variables, which would bypass the address checks.

Failures are `InvalidURL` (cannot or may not be fetched) or `InvalidParameter` (fetched, but not
acceptable), naming the request field.

Webhook callbacks go out through the same guard: `check` applies the URL and address rules
without sending anything (at submission), and `post` sends one request under them, connected
to the address it checked, following no redirect, and reading at most a few bytes back.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore

from wanserve.errors import InvalidParameter, InvalidURL

Resolver = Callable[[str, int], list[str]]
_REDIRECTS = {301, 302, 303, 307, 308}
# Cloud instance-metadata endpoints: AWS/GCP/Azure/OpenStack, Alibaba Cloud, AWS over IPv6,
# and Azure's WireServer (which Python counts as a global address).
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("168.63.129.16"),
}
# IPv6 ranges that carry an IPv4 address: NAT64 (RFC 6052, 8215) and the IPv4-compatible form.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_ACCEPT = {
    "image": ("image/",),
    "audio": ("audio/", "video/mpeg"),
    "video": ("video/", "application/mp4"),
}
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream", "")


@dataclass(frozen=True)
class FetchPolicy:
    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 60.0
    max_redirects: int = 3
    user_agent: str = "wanserve-fetch/1"


@dataclass(frozen=True)
class Posted:
    """The answer to a `post`: its status, and the first bytes of its body (for logs)."""

    status: int
    answer: bytes


# A webhook receiver's answer is not ours to read: enough for a log line, no more.
_POST_ANSWER_BYTES = 1024


@dataclass(frozen=True)
class Fetched:
    content_type: str
    data: bytes
    url: str  # after redirects


class BlockedAddress(Exception):
    def __init__(self, host: str, addresses: Iterable[str]) -> None:
        super().__init__(host)
        self.host = host
        self.addresses = list(addresses)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_allowed(address: str, *, allow_private: bool, trusted: bool = False) -> bool:
    """May a fetch connect to `address`? `trusted`: the host was named by the operator, which
    lifts the private-network rule only; metadata and link-local stay refused."""
    ip = ipaddress.ip_address(address)
    views = [ip, *_embedded_ipv4(ip)]
    if any(_never(v) for v in views):
        return False
    if trusted or all(v.is_global for v in views):
        return True
    return allow_private


def _never(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # Metadata and link-local addresses are where cloud credentials live.
    return ip in _METADATA or ip.is_link_local or ip.is_multicast or ip.is_unspecified


def _embedded_ipv4(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address reaches through a translation mechanism."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.append(ip.teredo[1])
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in _NAT64_LOCAL:
        # Its IPv4 layout is operator-defined: treat it as reaching a local network.
        found.append(ipaddress.IPv4Address("10.0.0.0"))
    return found


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves, checks, then connects to the checked address itself."""

    def __init__(self, policy: FetchPolicy, resolve: Resolver) -> None:
        self._policy = policy
        self._resolve = resolve
        self._dns = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="dns")

    def allowed_addresses(self, host: str, port: int) -> list[str]:
        """The addresses of `host` the policy lets a request connect to (`BlockedAddress` if
        none); DNS is bounded by the connect timeout."""
        future = self._dns.submit(self._resolve, host, port)
        try:
            addresses = future.result(timeout=self._policy.connect_timeout)
        except concurrent.futures.TimeoutError:
            raise httpcore.ConnectTimeout(f"DNS lookup of {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        trusted = host.lower() in self._policy.allowed_hosts
        private_ok = self._policy.allow_private
        allowed = [
            a for a in addresses if address_allowed(a, allow_private=private_ok, trusted=trusted)
        ]
        if not allowed:
            raise BlockedAddress(host, addresses)
        return allowed

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        allowed = self.allowed_addresses(host, port)
        return super().connect_tcp(allowed[0], port, timeout, local_address, socket_options)


@dataclass
class SafeFetcher:
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    resolve: Resolver = system_resolver

    def __post_init__(self) -> None:
        self._backend = _GuardedBackend(self.policy, self.resolve)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(),
            network_backend=self._backend,
            max_connections=16,
            retries=0,
        )

    def check(self, url: str, *, field: str) -> None:
        """Refuse, as `InvalidURL`, a URL no guarded request could be sent to now: not http(s),
        no host, a bad port, or a host that does not resolve to an allowed address. Nothing
        is sent. (DNS may change later: `post` checks again when it connects.)"""
        try:
            parts = urlsplit(_idna(url))
            self._check_url(url, field)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            self._backend.allowed_addresses(host, port)
        except BlockedAddress as exc:
            raise InvalidURL(_blocked(field, exc.host)) from None
        except httpcore.ConnectTimeout:
            raise InvalidURL(f"{field}: the DNS lookup of its host timed out.") from None
        except httpcore.ConnectError:
            raise InvalidURL(f"{field}: its host name does not resolve.") from None
        except (ValueError, UnicodeError):
            raise InvalidURL(f"{field} is not a valid URL.") from None

    def post(
        self,
        url: str,
        *,
        field: str,
        body: bytes,
        headers: Iterable[tuple[str, str]],
        timeout: float,
    ) -> Posted:
        """POST `body` to `url` once: no redirect is followed (a 3xx is an answer like any
        other), the whole exchange is bounded by `timeout`, and at most `_POST_ANSWER_BYTES`
        of the answer are read. Anything that prevents an HTTP answer is `InvalidURL`."""
        deadline = time.monotonic() + timeout
        limits = {
            "connect": min(timeout, self.policy.connect_timeout),
            "read": timeout,
            "write": timeout,
            "pool": timeout,
        }
        sent = [
            (b"User-Agent", self.policy.user_agent.encode()),
            (b"Content-Type", b"application/json"),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
        ]
        with _exchange_errors(field, lambda: url, verb="send to", what="a valid URL"):
            current = _idna(url)
            self._check_url(current, field)
            with self._pool.stream(
                "POST", current, headers=sent, content=body, extensions={"timeout": limits}
            ) as resp:
                answer = b""
                for chunk in resp.iter_stream():
                    answer += chunk
                    if len(answer) >= _POST_ANSWER_BYTES or time.monotonic() > deadline:
                        break
                return Posted(status=resp.status, answer=answer[:_POST_ANSWER_BYTES])

    def fetch(self, url: str, *, field: str, kind: str, max_bytes: int) -> Fetched:
        """GET `url` for request field `field`, expecting `kind` ("image", "audio" or "video")."""
        deadline = time.monotonic() + self.policy.total_timeout
        current = url
        # The URL named in an error is the hop that failed (`current` follows redirects).
        with _exchange_errors(field, lambda: current, verb="fetch", what="a fetchable URL"):
            current = _idna(url)
            for _hop in range(self.policy.max_redirects + 1):
                self._check_url(current, field)
                location = self._get(current, field, kind, max_bytes, deadline)
                if isinstance(location, Fetched):
                    return location
                current = _idna(urljoin(current, location))
        raise InvalidURL(f"{field}: more than {self.policy.max_redirects} redirects.")

    def _check_url(self, url: str, field: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise InvalidURL(f"{field}: only http and https URLs can be fetched ({_safe(url)}).")

    def _get(
        self, url: str, field: str, kind: str, max_bytes: int, deadline: float
    ) -> Fetched | str:
        timeout = {
            "connect": self.policy.connect_timeout,
            "read": self.policy.read_timeout,
            "write": self.policy.read_timeout,
            "pool": self.policy.connect_timeout,
        }
        headers = [(b"User-Agent", self.policy.user_agent.encode()), (b"Accept", b"*/*")]
        with self._pool.stream(
            "GET", url, headers=headers, extensions={"timeout": timeout}
        ) as resp:
            head = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
            if resp.status in _REDIRECTS:
                location = head.get("location")
                if not location:
                    raise InvalidURL(f"{field}: HTTP {resp.status} redirect without a Location.")
                return location
            if resp.status != 200:
                raise InvalidURL(f"{field}: {_safe(url)} answered HTTP {resp.status}.")
            content_type = head.get("content-type", "").split(";")[0].strip().lower()
            accepted = _ACCEPT[kind]
            if not content_type.startswith(accepted) and content_type not in _GENERIC_TYPES:
                raise InvalidParameter(f"{field}: {_safe(url)} is {content_type}, not {kind} data.")
            declared = head.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise InvalidParameter(f"{field} is larger than {max_bytes // (1024 * 1024)} MB.")
            chunks, size = [], 0
            for chunk in resp.iter_stream():
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidParameter(
                        f"{field} is larger than {max_bytes // (1024 * 1024)} MB."
                    )
                if time.monotonic() > deadline:
                    raise InvalidURL(
                        f"{field}: fetching {_safe(url)} took longer than "
                        f"{self.policy.total_timeout:.0f} s."
                    )
                chunks.append(chunk)
            return Fetched(content_type=content_type, data=b"".join(chunks), url=url)


@contextmanager
def _exchange_errors(field: str, url: Callable[[], str], *, verb: str, what: str) -> Iterator[None]:
    """What stops an HTTP exchange (a refused address, a timeout, a malformed URL, the network),
    as the `InvalidURL` a client sees, naming `field` and the URL: one mapping for GET and POST."""
    try:
        yield
    except BlockedAddress as exc:
        raise InvalidURL(_blocked(field, exc.host)) from None
    except httpcore.TimeoutException:
        raise InvalidURL(f"{field}: timed out trying to {verb} {_safe(url())}.") from None
    except (ValueError, TypeError, UnicodeError):
        raise InvalidURL(f"{field}: {_safe(url())} is not {what}.") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise InvalidURL(f"{field}: could not {verb} {_safe(url())}: {_first_line(exc)}.") from None


def _blocked(field: str, host: str) -> str:
    return (
        f"{field}: {host} resolves to a private, loopback, link-local or metadata address, "
        "which this server does not connect to."
    )


def _idna(url: str) -> str:
    """`url` with an internationalised host name written in ASCII (IDNA), as sockets need."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.isascii():
        return url
    ascii_host = host.encode("idna").decode("ascii")
    netloc = parts.netloc.replace(host, ascii_host, 1)
    return parts._replace(netloc=netloc).geturl()


def _safe(url: str) -> str:
    """The URL without credentials or query, for messages and logs."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the URL"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
