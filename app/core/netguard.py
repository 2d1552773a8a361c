"""SSRF guard for outbound webhook delivery.

A webhook URL is chosen by an API client, so without a guard pollhook would send requests
into its own network: the cloud metadata service (169.254.169.254), the database, admin
ports on loopback. The guard refuses every address that is not public unicast, twice:

- at registration (`SsrfGuard.check_url`): the URL's host, whether an IP literal in any
  spelling `inet_aton` accepts or a name (every address it resolves to), and
- at connect time (`GuardedTransport` / `guarded_client`): the name is resolved again, every
  answer is checked, and the connection is opened to a checked address. httpcore never sees
  the name as something to resolve, so a DNS answer that changes between the check and the
  connect (DNS rebinding) cannot slip through.

`POLLHOOK_WEBHOOK_ALLOW_NETWORKS` (`Settings.webhook_allow_networks`) opens chosen CIDRs for
internal service-to-service delivery and local development, each on every port or on one
(`127.0.0.1:9000`): allowing a local receiver must not also open the API's own port and the
database. An allowed network wins over every block reason.

Names are not filtered by suffix except `localhost` / `*.localhost` (RFC 6761: always
loopback, and often not in DNS at all, so resolving them would give a confusing error).
Names such as `metadata.google.internal` resolve normally and are refused by address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeAlias

import httpcore
import httpx

from app.core.config import AllowedNetwork
from app.core.errors import ValidationFailed
from app.core.http_client import PoolTransport

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
# host -> its addresses. Raises OSError (socket.gaierror) when the name does not resolve.
Resolver: TypeAlias = Callable[[str], Awaitable[Sequence[IPAddress]]]

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# IDNA-encoded host names as httpx hands them over; "_" occurs in real DNS names.
_HOST_NAME = re.compile(r"[a-z0-9_.-]+", re.IGNORECASE)
# A slow resolver must not hold a registration request or a delivery slot for long.
DEFAULT_RESOLVE_TIMEOUT_S = 5.0


class UnsafeTarget(Exception):
    """A webhook URL that may not be used; `str(exc)` is safe to show to API clients."""


class InvalidUrl(UnsafeTarget):
    """Not an acceptable http(s) URL (scheme, credentials, port, unresolvable host)."""


class BlockedAddress(UnsafeTarget):
    """The target is (or resolves to) an address the guard refuses.

    `address` and `reason` are for logs and callers. The message names the host the client
    gave and the class of address but not a resolved address, so a refusal does not reveal
    what internal DNS answers for a name.
    """

    def __init__(self, address: IPAddress, reason: str, host: str | None = None) -> None:
        self.address = address
        self.reason = reason
        self.host = host
        if host is None or _parse_ip_literal(host) is not None:
            message = f"webhook target {str(address)!r} is a blocked address ({reason})"
        else:
            message = f"webhook target {host!r} resolves to a blocked address ({reason})"
        super().__init__(message)


class ResolutionFailed(Exception):
    """The host did not resolve (or not in time). Internal: mapped by the callers below."""

    def __init__(self, host: str, *, timed_out: bool) -> None:
        self.host = host
        self.timed_out = timed_out
        what = "timed out" if timed_out else "no address"
        super().__init__(f"cannot resolve host {host!r} ({what})")


# --- classification -------------------------------------------------------------------------

# Explicit tables rather than `ipaddress` properties alone: `is_global` / `is_private` changed
# between Python releases, and on 3.11 they call 2002:7f00:1:: (6to4 of 127.0.0.1) and
# 64:ff9b::7f00:1 (NAT64 of 127.0.0.1) global. First match wins, so narrower ranges go first.
_V4_BLOCKS: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "reserved"),  # "this network"; 0.0.0.0 itself is "unspecified"
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),  # includes the metadata service 169.254.169.254
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes the broadcast address 255.255.255.255
    )
)

_V6_BLOCKS: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(cidr), reason)
    for cidr, reason in (
        ("100::/64", "reserved"),  # discard-only
        ("64:ff9b:1::/48", "reserved"),  # local-use NAT64 (RFC 8215): a private translator
        # Teredo embeds an obfuscated client address and goes through relays: never a target.
        ("2001::/32", "teredo"),
        ("2001:2::/48", "benchmarking"),
        ("2001:db8::/32", "documentation"),
        ("2001::/23", "reserved"),  # the rest of the IETF protocol assignments (ORCHID, AMT...)
        ("3fff::/20", "documentation"),
        ("5f00::/16", "reserved"),  # SRv6 SIDs
        ("fc00::/7", "private"),  # unique local addresses
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)

_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (RFC 4291 2.5.5.1)
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT ::ffff:0:a.b.c.d (RFC 2765)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)


def _low32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _classify_v4(ip: ipaddress.IPv4Address) -> str | None:
    if int(ip) == 0:
        return "unspecified"
    for network, reason in _V4_BLOCKS:
        if ip in network:
            return reason
    # Belt and braces for ranges IANA adds after this table was written.
    return None if ip.is_global else "not global"


def _classify_v6(ip: ipaddress.IPv6Address) -> str | None:
    # Forms that carry an IPv4 address reach that address (directly or through a
    # translator), so they are judged by it.
    mapped = ip.ipv4_mapped
    if mapped is not None:
        inner = _classify_v4(mapped)
        return f"ipv4-mapped {inner}" if inner else None
    if int(ip) == 0:
        return "unspecified"
    if int(ip) == 1:
        return "loopback"
    for network, label in (
        (_V4_COMPATIBLE, "ipv4-compatible"),
        (_V4_TRANSLATED, "ipv4-translated"),
    ):
        if ip in network:
            inner = _classify_v4(_low32(ip))
            # Deprecated forms: refused even around a public address.
            return f"{label} {inner}" if inner else "reserved"
    if ip in _NAT64:
        inner = _classify_v4(_low32(ip))
        return f"nat64 {inner}" if inner else None
    sixtofour = ip.sixtofour
    if sixtofour is not None:
        inner = _classify_v4(sixtofour)
        return f"6to4 {inner}" if inner else None
    for network, reason in _V6_BLOCKS:
        if ip in network:
            return reason
    if ip not in _V6_GLOBAL_UNICAST:
        return "reserved"
    return None if ip.is_global else "not global"


def classify(ip: IPAddress) -> str | None:
    """Why `ip` may not be a webhook target, or None when it is public unicast.

    Reasons: unspecified, loopback, private, link-local, site-local, cgnat, multicast,
    reserved, documentation, benchmarking, teredo, not global, and for IPv6 forms that embed
    an IPv4 address "<form> <reason of the IPv4 address>" (ipv4-mapped, ipv4-compatible,
    ipv4-translated, nat64, 6to4).
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return _classify_v4(ip)
    return _classify_v6(ip)


# --- IP literals ----------------------------------------------------------------------------


def _inet_aton_part(part: str) -> int | None:
    """One dot-separated part as `inet_aton` reads it: 0x hex, leading-0 octal, else decimal."""
    # int() also takes a prefix after ours ("0x0x7f" -> 0x7f, "00o17" -> 0o17); inet_aton does
    # not, and no part may contain an "o" or a second "x".
    if "x" in part[2:].lower() or "o" in part.lower():
        return None
    try:
        if part[:2].lower() == "0x":
            return int(part[2:], 16) if part[2:] else None
        if part.startswith("0") and len(part) > 1:
            return int(part[1:], 8)
        return int(part, 10)
    except ValueError:
        return None


def _parse_inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address `socket.inet_aton` would make of `text` ("127.1", "0x7f.1",
    "2130706433", "017700000001"), or None. Own implementation so that the result does not
    depend on the platform's libc (glibc also accepts trailing garbage after a space)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or any(not p or not p.isascii() or not p.isalnum() for p in parts):
        return None
    values = [_inet_aton_part(p) for p in parts]
    if any(v is None or v < 0 for v in values):
        return None
    *head, last = [v for v in values if v is not None]
    # The leading parts are one byte each; the last part fills the remaining bytes.
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _parse_ip_literal(host: str) -> IPAddress | None:
    """`host` as an IP address if it is one in any spelling a resolver would accept.

    IPv6 may come bracketed (from a URL) or with a zone ("fe80::1%eth0"). A single trailing
    dot is ignored, as browsers do, so that "127.0.0.1." is not mistaken for a name.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _parse_inet_aton(text)


def _is_localhost_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


# --- resolution -----------------------------------------------------------------------------


async def system_resolver(host: str) -> list[IPAddress]:
    """Resolve with the system resolver (getaddrinfo, in the loop's executor)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and isinstance(sockaddr[0], str):
            addresses.append(ipaddress.ip_address(sockaddr[0]))
    return addresses


class SsrfGuard:
    """Which addresses webhooks may reach; shared by registration and delivery."""

    def __init__(
        self,
        allowed: Sequence[AllowedNetwork] = (),
        *,
        resolver: Resolver | None = None,
        resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT_S,
    ) -> None:
        """`resolver` replaces the system resolver (tests simulate DNS with it)."""
        self.allowed: tuple[AllowedNetwork, ...] = tuple(allowed)
        self._resolver: Resolver = resolver or system_resolver
        self._resolve_timeout = resolve_timeout

    def is_allowed(self, ip: IPAddress, port: int) -> bool:
        """Whether an allow-list entry opens `ip` on `port`, whatever the address class."""
        candidates: list[IPAddress] = [ip]
        # An IPv4-mapped address *is* the IPv4 address on a dual-stack socket, so opening
        # 10.0.0.0/8 opens ::ffff:10.0.0.0/104 as well.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(
            entry.port in (None, port) and c.version == entry.network.version and c in entry.network
            for c in candidates
            for entry in self.allowed
        )

    def check_ip(self, ip: IPAddress, *, port: int, host: str | None = None) -> None:
        """Raise BlockedAddress unless `ip` is public, or allowed on `port`."""
        if self.is_allowed(ip, port):
            return
        reason = classify(ip)
        if reason is not None:
            raise BlockedAddress(ip, reason, host)

    async def resolve_checked(self, host: str, *, port: int) -> list[IPAddress]:
        """The addresses `host` stands for, each one checked for `port`; the first refusal wins.

        `host` is a URL host as httpx hands it over (IDNA-encoded, IPv6 without brackets).
        Raises BlockedAddress, or ResolutionFailed when the name does not resolve within the
        guard's resolve timeout.
        """
        if _is_localhost_name(host):
            # Loopback by definition; when loopback is allowed it resolves like any name.
            self.check_ip(ipaddress.IPv4Address("127.0.0.1"), port=port, host=host)
        literal = _parse_ip_literal(host)
        if literal is not None:
            self.check_ip(literal, port=port, host=host)
            return [literal]
        try:
            async with asyncio.timeout(self._resolve_timeout):
                answers = await self._resolver(host)
        except TimeoutError:
            raise ResolutionFailed(host, timed_out=True) from None
        except (OSError, UnicodeError):  # UnicodeError: getaddrinfo's IDNA step on bad labels
            raise ResolutionFailed(host, timed_out=False) from None
        addresses = list(dict.fromkeys(answers))  # dedupe, keep the resolver's order
        if not addresses:
            raise ResolutionFailed(host, timed_out=False)
        # Every answer, not just the one we would dial: a name that mixes public and
        # internal answers is refused outright.
        for address in addresses:
            self.check_ip(address, port=port, host=host)
        return addresses

    async def check_url(self, url: str) -> None:
        """Registration-time check; raises InvalidUrl or BlockedAddress.

        Parsed with httpx, the parser the delivery client uses, so the host checked here is
        the host that will be dialled.
        """
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise InvalidUrl("not a valid URL") from None
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise InvalidUrl("URL scheme must be http or https")
        if parsed.userinfo:
            raise InvalidUrl("URL must not contain credentials (user:password@)")
        host = parsed.raw_host.decode("ascii")
        if not host:
            raise InvalidUrl("URL has no host")
        if parsed.port is not None and not 1 <= parsed.port <= 65_535:
            raise InvalidUrl("URL port must be between 1 and 65535")
        if _parse_ip_literal(host) is None and not _HOST_NAME.fullmatch(host):
            # httpx percent-encodes what it does not like ("exa mple" -> "exa%20mple").
            raise InvalidUrl("URL host is not a valid host name")
        try:
            # The port the delivery client will dial: the URL's, else the scheme's.
            await self.resolve_checked(host, port=parsed.port or DEFAULT_PORTS[parsed.scheme])
        except ResolutionFailed:
            raise InvalidUrl(f"cannot resolve host {host!r}") from None


# --- connect-time enforcement for httpx ----------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that dials only addresses the guard accepts.

    httpcore calls `connect_tcp` with the URL's host and later starts TLS on the returned
    stream with `server_hostname` set to that same host (httpcore/_async/connection.py), so
    SNI and certificate verification still use the name while the TCP connection goes to
    the checked IP. BlockedAddress propagates unwrapped (httpcore and httpx only map their
    own exception types) and is not retried.
    """

    def __init__(self, guard: SsrfGuard, inner: httpcore.AsyncNetworkBackend | None = None):
        self._guard = guard
        self._inner = inner or httpcore.AnyIOBackend()

    # The signatures are httpcore's, hence `timeout` parameters (ASYNC109).
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # `timeout` is httpx's connect timeout; resolution and all dial attempts share it.
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._guard.resolve_checked(host, port=port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"cannot resolve host {host!r} (timed out)") from exc
        except ResolutionFailed as exc:
            error = httpcore.ConnectTimeout if exc.timed_out else httpcore.ConnectError
            raise error(str(exc)) from exc
        options = None if socket_options is None else list(socket_options)
        # Try the checked addresses in the resolver's order until one answers.
        for index, address in enumerate(addresses):
            last = index == len(addresses) - 1
            attempt_timeout = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise httpcore.ConnectTimeout(f"timed out connecting to {host!r}")
                # Split what is left so that one black-holed address cannot use it all.
                attempt_timeout = remaining / (len(addresses) - index)
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=attempt_timeout,
                    local_address=local_address,
                    socket_options=options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                if last:
                    raise
        raise httpcore.ConnectError(f"no address to connect to for {host!r}")  # unreachable

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class GuardedTransport(PoolTransport):
    """An httpx transport whose connections go only to addresses the guard accepts: an
    httpcore pool on `GuardedBackend`. HTTP/1.1 only; no proxies, no unix sockets."""

    def __init__(
        self,
        guard: SsrfGuard,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retries: int = 0,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> None:
        super().__init__(
            httpcore.AsyncConnectionPool(
                ssl_context=ssl_context or httpx.create_ssl_context(),
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                http1=True,
                http2=False,
                retries=retries,
                socket_options=None if socket_options is None else list(socket_options),
                network_backend=GuardedBackend(guard),
            )
        )


def guarded_client(
    guard: SsrfGuard,
    *,
    timeout: httpx.Timeout | float = 15.0,
    limits: httpx.Limits = DEFAULT_LIMITS,
    ssl_context: ssl.SSLContext | None = None,
    max_redirects: int = 0,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An AsyncClient whose every connection the guard checks (webhook delivery, the
    archive's downloads).

    Redirects are not followed unless a request asks (a 3xx could point anywhere; each hop
    then connects through the guard), at most `max_redirects` of them, and the environment
    is ignored: proxy variables would bypass the guard and ~/.netrc credentials would be
    sent to client-chosen hosts.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(guard, ssl_context=ssl_context, limits=limits),
        timeout=timeout,
        follow_redirects=False,
        max_redirects=max_redirects,
        headers=headers,
        trust_env=False,
    )


def refusal_in(exc: BaseException, kind: type[UnsafeTarget] = UnsafeTarget) -> UnsafeTarget | None:
    """The guard's refusal (of `kind`) that `exc` was raised from, if any: a transport wraps
    what the guard raised at connect time in errors of its own."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def check_destination(guard: SsrfGuard, url: str, field: str) -> None:
    """Refuse URLs that are not http(s) or that lead into internal networks (422)."""
    try:
        await guard.check_url(url)
    except (InvalidUrl, BlockedAddress) as exc:
        raise ValidationFailed.field(field, str(exc)) from None
