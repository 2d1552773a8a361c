"""The SSRF guard: address classification, registration-time URL checks, and the connect-time
guard in the delivery client (DNS rebinding), against tiny servers on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpcore
import httpx
import pytest

from app.core.config import AllowedNetwork, load_settings
from app.core.http_client import httpx_error_for
from app.core.netguard import (
    BlockedAddress,
    GuardedTransport,
    InvalidUrl,
    IPAddress,
    SsrfGuard,
    UnsafeTarget,
    classify,
    guarded_client,
    system_resolver,
)
from tests.helpers import self_signed_cert

ip = ipaddress.ip_address


def allow(*entries: str) -> list[AllowedNetwork]:
    """An allow-list as POLLHOOK_WEBHOOK_ALLOW_NETWORKS spells it."""
    return [AllowedNetwork.parse(entry) for entry in entries]


PUBLIC_V4 = "93.184.216.34"

# --- classify -------------------------------------------------------------------------------

CLASSIFY_CASES: list[tuple[str, str | None]] = [
    # public
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    (PUBLIC_V4, None),
    ("1.0.0.0", None),
    ("223.255.255.255", None),
    ("2606:4700:4700::1111", None),
    ("2a00:1450:4001:80b::200e", None),
    # unspecified, "this network"
    ("0.0.0.0", "unspecified"),
    ("0.0.0.1", "reserved"),
    ("0.255.255.255", "reserved"),
    ("::", "unspecified"),
    # loopback
    ("127.0.0.1", "loopback"),
    ("127.0.0.0", "loopback"),
    ("127.255.255.255", "loopback"),
    ("::1", "loopback"),
    # private
    ("9.255.255.255", None),
    ("10.0.0.0", "private"),
    ("10.255.255.255", "private"),
    ("11.0.0.0", None),
    ("172.15.255.255", None),
    ("172.16.0.0", "private"),
    ("172.31.255.255", "private"),
    ("172.32.0.0", None),
    ("192.167.255.255", None),
    ("192.168.0.0", "private"),
    ("192.168.255.255", "private"),
    ("192.169.0.0", None),
    # link-local, metadata service
    ("169.253.255.255", None),
    ("169.254.0.0", "link-local"),
    ("169.254.169.254", "link-local"),
    ("169.254.255.255", "link-local"),
    ("169.255.0.0", None),
    # CGNAT
    ("100.63.255.255", None),
    ("100.64.0.0", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("100.128.0.0", None),
    # multicast, reserved, broadcast
    ("223.255.255.254", None),
    ("224.0.0.0", "multicast"),
    ("239.255.255.255", "multicast"),
    ("240.0.0.0", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "reserved"),
    # IETF assignments, documentation, benchmarking
    ("192.0.0.0", "reserved"),
    ("192.0.0.9", "reserved"),  # is_global says True; still never a webhook target
    ("192.0.0.255", "reserved"),
    ("192.0.1.0", None),
    ("192.0.2.0", "documentation"),
    ("192.0.2.255", "documentation"),
    ("192.88.99.1", "reserved"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.255", "documentation"),
    ("198.17.255.255", None),
    ("198.18.0.0", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.20.0.0", None),
    # IPv6 ULA, link-local, site-local, multicast
    ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"),
    ("fc00::", "private"),
    ("fd00:ec2::254", "private"),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "private"),
    ("fe80::", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"),
    ("fec0::1", "site-local"),
    ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "site-local"),
    ("ff00::", "multicast"),
    ("ff02::1", "multicast"),
    # IPv4-mapped: judged by the IPv4 address
    ("::ffff:127.0.0.1", "ipv4-mapped loopback"),
    ("::ffff:7f00:1", "ipv4-mapped loopback"),
    ("::ffff:10.1.2.3", "ipv4-mapped private"),
    ("::ffff:169.254.169.254", "ipv4-mapped link-local"),
    ("::ffff:100.64.0.1", "ipv4-mapped cgnat"),
    ("::ffff:0.0.0.0", "ipv4-mapped unspecified"),
    ("::ffff:8.8.8.8", None),
    # IPv4-compatible and -translated (deprecated): refused even around a public address
    ("::127.0.0.1", "ipv4-compatible loopback"),
    ("::10.0.0.1", "ipv4-compatible private"),
    ("::8.8.8.8", "reserved"),
    ("::ffff:0:127.0.0.1", "ipv4-translated loopback"),
    ("::ffff:0:8.8.8.8", "reserved"),
    # NAT64 and 6to4: judged by the embedded IPv4 address (Python 3.11 calls these global)
    ("64:ff9b::127.0.0.1", "nat64 loopback"),
    ("64:ff9b::a9fe:a9fe", "nat64 link-local"),
    ("64:ff9b::10.0.0.1", "nat64 private"),
    ("64:ff9b::8.8.8.8", None),
    ("64:ff9b:1::1", "reserved"),
    ("2002:7f00:1::", "6to4 loopback"),
    ("2002:a9fe:a9fe::1", "6to4 link-local"),
    ("2002:c0a8:101::1", "6to4 private"),
    ("2002:808:808::1", None),
    # the rest of IPv6's special ranges
    ("100::", "reserved"),
    ("100::ffff:ffff:ffff:ffff", "reserved"),
    ("2001::1", "teredo"),
    ("2001:2::1", "benchmarking"),
    ("2001:10::1", "reserved"),
    ("2001:1ff:ffff::1", "reserved"),
    ("2001:200::1", None),
    ("2001:db8::", "documentation"),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"),
    ("3fff::1", "documentation"),
    ("5f00::1", "reserved"),
    ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"),
    ("4000::1", "reserved"),
]


@pytest.mark.parametrize(("address", "reason"), CLASSIFY_CASES)
def test_classify(address: str, reason: str | None) -> None:
    assert classify(ip(address)) == reason


# --- check_ip and allowed networks ----------------------------------------------------------


def test_check_ip_raises_with_address_and_reason() -> None:
    with pytest.raises(BlockedAddress) as caught:
        SsrfGuard().check_ip(ip("169.254.169.254"), port=80)
    assert caught.value.address == ip("169.254.169.254")
    assert caught.value.reason == "link-local"
    assert "169.254.169.254" in str(caught.value)
    assert "link-local" in str(caught.value)


def test_check_ip_passes_public_addresses() -> None:
    SsrfGuard().check_ip(ip("8.8.8.8"), port=443)
    SsrfGuard().check_ip(ip("2606:4700:4700::1111"), port=443)


@pytest.mark.parametrize(
    ("allowed", "address", "opened"),
    [
        ("127.0.0.1/32", "127.0.0.1", True),
        ("127.0.0.1/32", "127.0.0.2", False),
        ("127.0.0.0/8", "127.9.9.9", True),
        ("::1/128", "::1", True),
        ("::1/128", "127.0.0.1", False),
        ("127.0.0.0/8", "::1", False),
        ("10.0.0.0/8", "10.20.30.40", True),
        ("10.0.0.0/8", "::ffff:10.20.30.40", True),  # a mapped address is the IPv4 address
        ("10.0.0.0/8", "64:ff9b::10.20.30.40", False),  # NAT64 goes through a translator
        ("0.0.0.0/0", "169.254.169.254", True),  # the allowance wins over every reason
        ("fd00::/8", "fd12::1", True),
        ("::/96", "0.0.0.1", False),  # never compare across IP versions
    ],
)
def test_allowed_networks(allowed: str, address: str, opened: bool) -> None:
    policy = SsrfGuard(allow(allowed))
    if opened:
        policy.check_ip(ip(address), port=9000)
    else:
        with pytest.raises(BlockedAddress):
            policy.check_ip(ip(address), port=9000)


@pytest.mark.parametrize(
    ("allowed", "address", "port", "opened"),
    [
        ("127.0.0.1:9000", "127.0.0.1", 9000, True),
        ("127.0.0.1:9000", "127.0.0.1", 8000, False),  # the API's own port
        ("127.0.0.1:9000", "127.0.0.1", 5432, False),  # Postgres
        ("127.0.0.1:9000", "127.0.0.2", 9000, False),
        ("127.0.0.0/8:9000", "127.9.9.9", 9000, True),
        ("127.0.0.0/8:9000", "127.9.9.9", 9001, False),
        ("[::1]:9000", "::1", 9000, True),
        ("[::1]:9000", "::1", 80, False),
        ("[::1]:9000", "127.0.0.1", 9000, False),
        ("[fd00::/8]:443", "fd12::1", 443, True),
        ("[fd00::/8]:443", "fd12::1", 80, False),
        ("10.0.0.0/8:443", "::ffff:10.1.2.3", 443, True),  # mapped: the IPv4 entry, same port
        ("10.0.0.0/8:443", "::ffff:10.1.2.3", 80, False),
        ("127.0.0.1:9000", "8.8.8.8", 5432, True),  # public addresses are not the list's concern
    ],
)
def test_allowed_entries_with_a_port_open_only_that_port(
    allowed: str, address: str, port: int, opened: bool
) -> None:
    policy = SsrfGuard(allow(allowed))
    if opened:
        policy.check_ip(ip(address), port=port)
    else:
        with pytest.raises(BlockedAddress):
            policy.check_ip(ip(address), port=port)


def test_policy_from_settings_allow_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLHOOK_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8, ::1/128")
    policy = SsrfGuard(load_settings().webhook_allow_networks)
    policy.check_ip(ip("127.0.0.1"), port=9000)
    policy.check_ip(ip("::1"), port=9000)
    with pytest.raises(BlockedAddress):
        policy.check_ip(ip("10.0.0.1"), port=9000)


# --- a fake DNS -----------------------------------------------------------------------------


class FakeDns:
    """Answers from a table; a name with several answer lists gives them in turn (the last
    one repeats), which is how the tests play a DNS-rebinding attacker."""

    def __init__(self, table: dict[str, Sequence[Sequence[str]]] | None = None) -> None:
        self.table = {name: [list(a) for a in answers] for name, answers in (table or {}).items()}
        self.calls: list[str] = []

    async def __call__(self, host: str) -> list[IPAddress]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        current = answers.pop(0) if len(answers) > 1 else answers[0]
        return [ip(a) for a in current]


def dns(**names: str | Sequence[str]) -> FakeDns:
    """dns(hooks_example_test="127.0.0.1") -> a FakeDns for hooks.example.test."""
    table: dict[str, Sequence[Sequence[str]]] = {}
    for key, value in names.items():
        table[key.replace("_", ".")] = [[value] if isinstance(value, str) else list(value)]
    return FakeDns(table)


async def no_dns(host: str) -> list[IPAddress]:
    raise AssertionError(f"an IP literal was sent to the resolver: {host!r}")


# --- check_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "gopher://example.com:70/_GET",
        "ws://example.com/",
        "data:text/plain,hi",
        "example.com/hook",
        "//example.com/hook",
    ],
)
async def test_check_url_refuses_other_schemes(url: str) -> None:
    with pytest.raises(InvalidUrl, match="http or https"):
        await SsrfGuard(resolver=no_dns).check_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://user:pass@example.com/", "https://user@example.com/", "https://:secret@example.com/"],
)
async def test_check_url_refuses_credentials(url: str) -> None:
    with pytest.raises(InvalidUrl, match="credentials"):
        await SsrfGuard(resolver=no_dns).check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http:///hook", "no host"),
        ("https://", "no host"),
        ("http://example.com:0/", "port"),
        ("http://example.com:65536/", "port"),  # httpx itself accepts it
        ("http://example.com:http/", "valid URL"),
        ("http://exa mple.com/", "not a valid host name"),
        ("http://exa%00mple.com/", "not a valid host name"),
        ("http://0177.0.0.1/", "valid URL"),  # httpx refuses dotted quads with octal parts
    ],
)
async def test_check_url_refuses_malformed(url: str, message: str) -> None:
    with pytest.raises(InvalidUrl, match=message):
        await SsrfGuard(resolver=no_dns).check_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1.:8080/", "loopback"),
        ("http://2130706433/", "loopback"),  # decimal
        ("http://0x7f000001/", "loopback"),  # hex
        ("http://0x7f.1/", "loopback"),  # hex, short form
        ("http://0X7F.0x0.0.1/", "loopback"),
        ("http://017700000001/", "loopback"),  # octal
        ("http://0177.0.1/", "loopback"),
        ("http://127.1/", "loopback"),  # short form
        ("http://127.0.1/", "loopback"),
        ("http://0/", "unspecified"),
        ("http://0.0.0.0:9000/", "unspecified"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://0xa9fea9fe/", "link-local"),
        ("http://10.1.2.3:8080/hook", "private"),
        ("https://192.168.1.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("https://100.64.0.1/", "cgnat"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "reserved"),
        ("http://192.0.2.10/", "documentation"),
        ("http://[::1]/", "loopback"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://[::]/", "unspecified"),
        ("http://[::ffff:127.0.0.1]/", "ipv4-mapped loopback"),
        ("http://[::ffff:7f00:1]/", "ipv4-mapped loopback"),
        ("http://[::ffff:a9fe:a9fe]/", "ipv4-mapped link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/", "nat64 link-local"),
        ("http://[2002:a9fe:a9fe::]/", "6to4 link-local"),
        ("http://[fd00:ec2::254]/", "private"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[2001:db8::1]/", "documentation"),
    ],
)
async def test_check_url_refuses_blocked_ip_literals(url: str, reason: str) -> None:
    with pytest.raises(BlockedAddress) as caught:
        await SsrfGuard(resolver=no_dns).check_url(url)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8/hook",
        "https://134744072/",  # 8.8.8.8 as one number
        "https://[2606:4700:4700::1111]:8443/hook",
        "http://[::ffff:8.8.8.8]/",
    ],
)
async def test_check_url_accepts_public_ip_literals_without_dns(url: str) -> None:
    await SsrfGuard(resolver=no_dns).check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/",
        "http://LOCALHOST:8080/",
        "http://localhost./",
        "http://foo.localhost/",
        "https://a.b.LocalHost:8443/hook",
    ],
)
async def test_check_url_refuses_localhost_names_without_dns(url: str) -> None:
    with pytest.raises(BlockedAddress) as caught:
        await SsrfGuard(resolver=no_dns).check_url(url)
    assert caught.value.reason == "loopback"
    assert "localhost" in str(caught.value).lower()


@pytest.mark.parametrize("host", ["0x0x7f.1", "00o177.1", "1.0x0x1"])
async def test_check_url_resolves_spellings_inet_aton_refuses(host: str) -> None:
    # int() takes a second base prefix ("0x0x7f" -> 0x7f); inet_aton does not: these are names.
    resolver = FakeDns({host: [[PUBLIC_V4]]})
    await SsrfGuard(resolver=resolver).check_url(f"http://{host}/")
    assert resolver.calls == [host]


async def test_check_url_resolves_names() -> None:
    resolver = dns(hooks_example_com=PUBLIC_V4)
    await SsrfGuard(resolver=resolver).check_url("https://hooks.example.com/pollhook")
    assert resolver.calls == ["hooks.example.com"]


async def test_check_url_refuses_a_name_resolving_to_loopback() -> None:
    policy = SsrfGuard(resolver=dns(evil_example_com="127.0.0.1"))
    with pytest.raises(BlockedAddress) as caught:
        await policy.check_url("http://evil.example.com/")
    assert caught.value.reason == "loopback"
    assert caught.value.host == "evil.example.com"


async def test_check_url_checks_every_answer() -> None:
    """One internal answer among public ones is enough to refuse; the message names the
    host and the class but not the internal address (no internal DNS data leaks)."""
    resolver = dns(mixed_example_com=[PUBLIC_V4, "2606:4700:4700::1111", "10.9.8.7"])
    with pytest.raises(BlockedAddress) as caught:
        await SsrfGuard(resolver=resolver).check_url("https://mixed.example.com/")
    assert caught.value.address == ip("10.9.8.7")
    assert caught.value.reason == "private"
    message = str(caught.value)
    assert "mixed.example.com" in message
    assert "private" in message
    assert "10.9.8.7" not in message


async def test_check_url_refuses_unresolvable_names() -> None:
    with pytest.raises(InvalidUrl, match=r"cannot resolve host 'nowhere\.example\.com'"):
        await SsrfGuard(resolver=dns()).check_url("https://nowhere.example.com/")
    empty = FakeDns({"empty.example.com": [[]]})
    with pytest.raises(InvalidUrl, match="cannot resolve"):
        await SsrfGuard(resolver=empty).check_url("https://empty.example.com/")


async def test_check_url_bounds_resolution_time() -> None:
    async def slow(host: str) -> list[IPAddress]:
        await asyncio.Event().wait()  # a resolver that never answers
        return [ip(PUBLIC_V4)]

    policy = SsrfGuard(resolver=slow, resolve_timeout=0.05)
    async with asyncio.timeout(5):
        with pytest.raises(InvalidUrl, match="cannot resolve"):
            await policy.check_url("https://slow.example.com/")


async def test_both_errors_share_a_base_class() -> None:
    for url in ("ftp://x/", "http://127.0.0.1/"):
        with pytest.raises(UnsafeTarget):
            await SsrfGuard(resolver=no_dns).check_url(url)


async def test_allowed_networks_open_loopback_urls() -> None:
    policy = SsrfGuard(allow("127.0.0.1/32", "::1/128"), resolver=no_dns)
    await policy.check_url("http://127.0.0.1:8080/hook")
    await policy.check_url("http://[::1]:8080/hook")
    with pytest.raises(BlockedAddress):
        await policy.check_url("http://127.0.0.2:8080/hook")
    with pytest.raises(BlockedAddress):
        await policy.check_url("http://10.0.0.1/")


@pytest.mark.parametrize(
    ("allowed", "url", "opened"),
    [
        (("127.0.0.1:9000", "[::1]:9000"), "http://127.0.0.1:9000/hook", True),
        (("127.0.0.1:9000", "[::1]:9000"), "https://[::1]:9000/hook", True),
        (("127.0.0.1:9000", "[::1]:9000"), "http://127.0.0.1:8000/v1/tasks", False),
        (("127.0.0.1:9000", "[::1]:9000"), "http://127.0.0.1:5432/", False),
        (("127.0.0.1:9000", "[::1]:9000"), "http://[::1]:5432/", False),
        (("127.0.0.1:9000", "[::1]:9000"), "http://127.0.0.1/", False),  # port 80
        (("127.0.0.1:9000", "[::1]:9000"), "https://127.0.0.1/", False),  # port 443
        (("127.0.0.1:9000", "[::1]:9000"), "http://2130706433:9000/", True),  # 127.0.0.1
        (("127.0.0.1:9000", "[::1]:9000"), "http://[::ffff:127.0.0.1]:9000/", True),
        (("127.0.0.1:9000", "[::1]:9000"), "http://[::ffff:127.0.0.1]:5432/", False),
        (("127.0.0.1:80",), "http://127.0.0.1/", True),  # the scheme's default port
        (("127.0.0.1:80",), "http://127.0.0.1:80/", True),
        (("127.0.0.1:80",), "https://127.0.0.1/", False),
        (("127.0.0.1:443",), "https://127.0.0.1/", True),
        (("127.0.0.1:443",), "http://127.0.0.1/", False),
    ],
)
async def test_check_url_uses_the_port_it_will_dial(
    allowed: tuple[str, ...], url: str, opened: bool
) -> None:
    policy = SsrfGuard(allow(*allowed), resolver=no_dns)
    if opened:
        await policy.check_url(url)
    else:
        with pytest.raises(BlockedAddress):
            await policy.check_url(url)


async def test_a_name_is_checked_on_the_urls_port() -> None:
    resolver = dns(hooks_example_test="127.0.0.1", localhost="127.0.0.1")
    policy = SsrfGuard(allow("127.0.0.1:9000"), resolver=resolver)
    await policy.check_url("http://hooks.example.test:9000/")
    await policy.check_url("http://localhost:9000/")
    for url in ("http://hooks.example.test:5432/", "http://localhost:8000/"):
        with pytest.raises(BlockedAddress):
            await policy.check_url(url)


async def test_localhost_resolves_normally_once_loopback_is_allowed() -> None:
    both = dns(localhost=["::1", "127.0.0.1"])
    await SsrfGuard(allow("127.0.0.0/8", "::1/128"), resolver=both).check_url(
        "http://localhost:9000/"
    )
    # Every answer is still checked: ::1 is not covered by 127.0.0.0/8.
    with pytest.raises(BlockedAddress) as caught:
        await SsrfGuard(allow("127.0.0.0/8"), resolver=both).check_url("http://localhost:9000/")
    assert caught.value.address == ip("::1")


@pytest.mark.parametrize(("host", "expected"), [("127.0.0.1", "127.0.0.1"), ("::1", "::1")])
async def test_system_resolver_on_numeric_hosts(host: str, expected: str) -> None:
    # Numeric hosts only: getaddrinfo answers them without any DNS traffic.
    assert ip(expected) in await system_resolver(host)


# --- connect time ---------------------------------------------------------------------------

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class LocalServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 that counts accepted connections, records
    request heads and answers with a canned response (or not at all)."""

    def __init__(self, response: bytes | None, tls: ssl.SSLContext | None) -> None:
        self.response = response
        self.tls = tls
        self.accepted = 0
        self.heads: list[bytes] = []
        self.port = 0
        self._release = asyncio.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            if self.response is None:
                await self._release.wait()
            else:
                writer.write(self.response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    def header(self, index: int, name: str) -> str | None:
        for line in self.heads[index].decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LocalServer]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._release.set()
            server.close()
            await server.wait_closed()


def serve(
    response: bytes | None = OK_RESPONSE, tls: ssl.SSLContext | None = None
) -> contextlib.AbstractAsyncContextManager[LocalServer]:
    return LocalServer(response, tls).running()


LOOPBACK = allow("127.0.0.0/8")


async def test_allowed_loopback_request_succeeds() -> None:
    async with serve() as server, guarded_client(SsrfGuard(LOOPBACK)) as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/hook")
    assert response.status_code == 200
    assert response.text == "ok"
    assert server.accepted == 1


async def test_blocked_at_connect_time_without_the_allowance() -> None:
    async with serve() as server, guarded_client(SsrfGuard()) as client:
        with pytest.raises(BlockedAddress) as caught:
            await client.get(f"http://127.0.0.1:{server.port}/hook")
        await asyncio.sleep(0.05)  # give a (wrongly) dialled connection time to arrive
    assert caught.value.reason == "loopback"
    assert server.accepted == 0


async def test_an_entry_with_a_port_is_enforced_at_connect_time() -> None:
    """Only the receiver's port is open: the same address on another port (the API, the
    database) is never dialled, whether the URL names the address or a name for it."""
    async with serve() as receiver, serve() as other:
        resolver = dns(hooks_example_test="127.0.0.1")
        policy = SsrfGuard(allow(f"127.0.0.1:{receiver.port}"), resolver=resolver)
        async with guarded_client(policy) as client:
            response = await client.get(f"http://hooks.example.test:{receiver.port}/hook")
            assert response.status_code == 200
            for url in (
                f"http://127.0.0.1:{other.port}/hook",
                f"http://hooks.example.test:{other.port}/hook",
            ):
                with pytest.raises(BlockedAddress):
                    await client.get(url)
            await asyncio.sleep(0.05)  # give a (wrongly) dialled connection time to arrive
    assert receiver.accepted == 1
    assert other.accepted == 0


async def test_dns_rebinding_is_caught_at_connect_time() -> None:
    """The name is public when registered and points at loopback when delivered to."""
    rebinding = FakeDns({"rebind.example.com": [[PUBLIC_V4], ["127.0.0.1"]]})
    policy = SsrfGuard(resolver=rebinding)
    async with serve() as server:
        url = f"http://rebind.example.com:{server.port}/hook"
        await policy.check_url(url)
        async with guarded_client(policy) as client:
            with pytest.raises(BlockedAddress) as caught:
                await client.post(url, content=b"{}")
            await asyncio.sleep(0.05)
    assert rebinding.calls == ["rebind.example.com", "rebind.example.com"]
    assert caught.value.reason == "loopback"
    assert caught.value.host == "rebind.example.com"
    assert "127.0.0.1" not in str(caught.value)
    assert server.accepted == 0


async def test_connect_time_refuses_mixed_answers_before_dialling() -> None:
    resolver = dns(mixed_example_com=[PUBLIC_V4, "127.0.0.1"])
    async with serve() as server, guarded_client(SsrfGuard(resolver=resolver)) as client:
        with pytest.raises(BlockedAddress):
            await client.get(f"http://mixed.example.com:{server.port}/")
        await asyncio.sleep(0.05)
    assert server.accepted == 0


async def test_connects_to_the_checked_address_with_the_original_host_header() -> None:
    policy = SsrfGuard(allow("127.0.0.1/32"), resolver=dns(hooks_example_test="127.0.0.1"))
    async with serve() as server, guarded_client(policy) as client:
        response = await client.post(f"http://hooks.example.test:{server.port}/in", json={})
    assert response.status_code == 200
    assert server.header(0, "Host") == f"hooks.example.test:{server.port}"
    assert server.heads[0].startswith(b"POST /in HTTP/1.1\r\n")


async def test_falls_back_to_the_next_checked_address() -> None:
    # Nothing listens on 127.0.0.2:<port> (the server is bound to 127.0.0.1 only).
    policy = SsrfGuard(LOOPBACK, resolver=dns(two_example_test=["127.0.0.2", "127.0.0.1"]))
    async with serve() as server, guarded_client(policy) as client:
        response = await client.get(f"http://two.example.test:{server.port}/")
    assert response.status_code == 200
    assert server.accepted == 1


async def test_connection_refused_is_an_httpx_connect_error() -> None:
    async with serve() as server:
        port = server.port
    async with guarded_client(SsrfGuard(LOOPBACK)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_unresolvable_at_connect_time_is_an_httpx_connect_error() -> None:
    async with guarded_client(SsrfGuard(resolver=dns())) as client:
        with pytest.raises(httpx.ConnectError, match="cannot resolve host"):
            await client.get("http://gone.example.com/")


async def test_slow_resolution_at_connect_time_is_an_httpx_connect_timeout() -> None:
    async def slow(host: str) -> list[IPAddress]:
        await asyncio.Event().wait()  # a resolver that never answers
        return [ip(PUBLIC_V4)]

    # Bounded by the policy's resolve timeout, and by httpx's connect timeout.
    for policy, timeout in (
        (SsrfGuard(resolver=slow, resolve_timeout=0.05), httpx.Timeout(5.0)),
        (SsrfGuard(resolver=slow), httpx.Timeout(5.0, connect=0.05)),
    ):
        async with asyncio.timeout(3), guarded_client(policy, timeout=timeout) as client:
            with pytest.raises(httpx.ConnectTimeout):
                await client.get("http://slow.example.com/")


async def test_read_timeout_is_an_httpx_read_timeout() -> None:
    async with (
        serve(response=None) as server,
        guarded_client(SsrfGuard(LOOPBACK), timeout=0.2) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"http://127.0.0.1:{server.port}/")


async def test_errors_while_reading_the_body_are_httpx_errors() -> None:
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"
    async with (
        serve(response=truncated) as server,
        guarded_client(SsrfGuard(LOOPBACK)) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{server.port}/")


async def test_redirects_are_not_followed() -> None:
    redirect = (
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    async with serve(response=redirect) as server, guarded_client(SsrfGuard(LOOPBACK)) as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
        assert not client.follow_redirects
        assert not client.trust_env
    assert response.status_code == 302
    assert server.accepted == 1


# --- TLS: certificate and SNI are checked against the name, not the dialled IP ---------------


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for hooks.example.test only (no IP SAN)."""
    pair = self_signed_cert(
        tmp_path_factory.mktemp("tls"), "hooks.example.test", "DNS:hooks.example.test"
    )
    if pair is None:
        pytest.skip("openssl is not installed")
    return pair


async def test_tls_verifies_the_hostname_while_dialling_the_checked_ip(
    tls_pair: tuple[Path, Path],
) -> None:
    cert, key = tls_pair
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    resolver = dns(hooks_example_test="127.0.0.1", other_example_test="127.0.0.1")
    policy = SsrfGuard(LOOPBACK, resolver=resolver)
    async with (
        serve(tls=server_tls) as server,
        guarded_client(policy, ssl_context=client_tls) as client,
    ):
        response = await client.get(f"https://hooks.example.test:{server.port}/")
        assert response.status_code == 200
        # The certificate does not cover this name (nor 127.0.0.1): verification must fail.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"https://other.example.test:{server.port}/")
    assert server.header(0, "Host") == f"hooks.example.test:{server.port}"


# --- the transport mirrors httpx's own ------------------------------------------------------


def test_exception_mapping_matches_httpx() -> None:
    """PoolTransport (under GuardedTransport) maps httpcore errors itself; if httpx changes
    its mapping this fails."""
    from httpx._transports.default import _load_httpcore_exceptions  # private: parity only

    reference = _load_httpcore_exceptions()
    for core_error in reference:
        expected: type[httpx.HTTPError] | None = None
        for source, target in reference.items():  # httpx's rule: the most specific target
            if issubclass(core_error, source) and (
                expected is None or issubclass(target, expected)
            ):
                expected = target
        assert httpx_error_for(core_error("x")) is expected, core_error
    assert httpx_error_for(BlockedAddress(ip("127.0.0.1"), "loopback")) is None


def test_transport_is_an_httpx_transport_on_a_public_httpcore_pool() -> None:
    transport = GuardedTransport(SsrfGuard())
    assert isinstance(transport, httpx.AsyncBaseTransport)
    # Private on purpose: what the transport is built on shows in no public behaviour, and
    # that it is httpcore's public pool (not httpx internals) is what this test keeps.
    assert isinstance(transport._pool, httpcore.AsyncConnectionPool)
