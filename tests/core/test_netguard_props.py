"""Properties of the SSRF guard's address classification and IP-literal parsing
(app/core/netguard.py).

The contract, from the module: `classify` returns None only for public unicast; it uses its
own tables, which are stricter than `ipaddress` on this Python (3.11) in a few documented
places; IPv6 forms that embed an IPv4 address are judged by that address (mapped, NAT64,
6to4) or always refused (IPv4-compatible, IPv4-translated); an allow-list entry wins over
every block reason, on its one port or on every port, and opens no other port; a host that
is an IP literal in any spelling `inet_aton` accepts (or an IPv6 literal, bracketed or with a
zone) is checked as that address, never resolved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from app.core.config import AllowedNetwork
from app.core.netguard import (
    BlockedAddress,
    IPAddress,
    IPNetwork,
    ResolutionFailed,
    SsrfGuard,
    classify,
)
from tests.properties import PROPERTY

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

# Where the module's tables refuse what `ipaddress` (3.11) calls global, as its comments say.
STRICTER_V4 = [
    ipaddress.IPv4Network("192.0.0.0/24"),  # all IETF protocol assignments
    ipaddress.IPv4Network("192.88.99.0/24"),  # deprecated 6to4 relay anycast
]
STRICTER_V6 = [
    ipaddress.IPv6Network("3fff::/20"),  # documentation (RFC 9637), newer than 3.11's table
]
EMBEDDING_V6 = [
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64
    ipaddress.IPv6Network("2002::/16"),  # 6to4
]
INTERESTING_V4 = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "1.0.0.0/8", "8.8.0.0/16", "100.0.0.0/8", "172.0.0.0/8", "192.0.0.0/8", "198.0.0.0/8",
]  # fmt: skip
INTERESTING_V6 = [
    "::/120", "100::/64", "64:ff9b:1::/48", "2001::/23", "2001::/32", "2001:2::/48",
    "2001:db8::/32", "2001:4:112::/48", "2001:20::/28", "3fff::/20", "5f00::/16", "fc00::/7",
    "fe80::/10", "fec0::/10", "ff00::/8", "2000::/3", "2400::/8", "2a00::/8", "4000::/3",
]  # fmt: skip


def addresses_in(cidr: str) -> st.SearchStrategy[IPAddress]:
    return st.ip_addresses(network=cidr)


# Hypothesis already favours the special-purpose registries; the tables' ranges are added.
v4_addresses: st.SearchStrategy[V4] = (
    st.ip_addresses(v=4) | st.sampled_from(INTERESTING_V4).flatmap(addresses_in)
).map(lambda ip: V4(int(ip)))
v6_any: st.SearchStrategy[V6] = (
    st.ip_addresses(v=6) | st.sampled_from(INTERESTING_V6).flatmap(addresses_in)
).map(lambda ip: V6(int(ip)))
v6_plain = v6_any.filter(lambda ip: not any(ip in n for n in EMBEDDING_V6))
addresses: st.SearchStrategy[IPAddress] = (
    v4_addresses | v6_any | v4_addresses.map(lambda v4: V6(0xFFFF << 32 | int(v4)))
)


def flags(ip: IPAddress) -> list[str]:
    names = ["is_private", "is_loopback", "is_link_local", "is_multicast", "is_reserved"]
    names += ["is_unspecified"] + (["is_site_local"] if isinstance(ip, V6) else [])
    return [name for name in names if getattr(ip, name)] + ([] if ip.is_global else ["!global"])


# --- classification -------------------------------------------------------------------------


@settings(PROPERTY, max_examples=200)
@given(v4_addresses)
def test_ipv4_is_allowed_exactly_when_ipaddress_calls_it_public_unicast(ip: V4) -> None:
    reason = classify(ip)
    if reason is None:
        assert flags(ip) == []
    elif not any(ip in n for n in STRICTER_V4):
        assert flags(ip) != []
    for name, expected in [
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
    ]:
        if getattr(ip, name):
            assert reason == expected


@settings(PROPERTY, max_examples=200)
@given(v6_plain)
def test_ipv6_is_allowed_exactly_when_ipaddress_calls_it_public_unicast(ip: V6) -> None:
    reason = classify(ip)
    global_unicast = ip in ipaddress.IPv6Network("2000::/3")
    if reason is None:
        assert flags(ip) == []
        assert global_unicast
    elif global_unicast and not any(ip in n for n in STRICTER_V6):
        # The module refuses all of 2001::/23; newer Pythons call a few parts of it global.
        assert flags(ip) != [] or ip in ipaddress.IPv6Network("2001::/23")
    for name, expected in [
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_site_local", "site-local"),
        ("is_multicast", "multicast"),
    ]:
        if getattr(ip, name):
            assert reason == expected
    if ip in ipaddress.IPv6Network("fc00::/7"):
        assert reason == "private"


@settings(PROPERTY, max_examples=200)
@given(v4_addresses, st.integers(min_value=0, max_value=2**80 - 1))
def test_forms_that_reach_an_ipv4_address_are_judged_by_it(ip: V4, low_bits: int) -> None:
    inner = classify(ip)
    for form, address in [
        ("ipv4-mapped", V6(0xFFFF << 32 | int(ip))),
        ("nat64", V6(int(V6("64:ff9b::")) | int(ip))),
        ("6to4", V6(0x2002 << 112 | int(ip) << 80 | low_bits)),
    ]:
        assert classify(address) == (f"{form} {inner}" if inner else None)


@settings(PROPERTY, max_examples=200)
@given(v4_addresses)
def test_deprecated_ipv4_embedding_forms_are_always_refused(ip: V4) -> None:
    assert classify(V6(int(ip))) is not None  # ::a.b.c.d
    assert classify(V6(0xFFFF << 16 << 32 | int(ip))) is not None  # ::ffff:0:a.b.c.d


# --- allowed networks -----------------------------------------------------------------------


def network_around(ip: IPAddress, prefix_bits: int) -> IPNetwork:
    prefix = min(prefix_bits, ip.max_prefixlen)
    if isinstance(ip, V4):
        return ipaddress.IPv4Network((int(ip), prefix), strict=False)
    return ipaddress.IPv6Network((int(ip), prefix), strict=False)


ports = st.integers(min_value=1, max_value=65_535)
entries = st.builds(
    lambda ip, prefix, port: AllowedNetwork(network_around(ip, prefix), port),
    addresses,
    st.integers(0, 128),
    st.none() | ports,
)


def opened_by(ip: IPAddress, port: int, allowed: Sequence[AllowedNetwork]) -> bool:
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, V6) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(
        entry.port in (None, port) and c.version == entry.network.version and c in entry.network
        for c in candidates
        for entry in allowed
    )


def refusal(policy: SsrfGuard, ip: IPAddress, port: int) -> BlockedAddress | None:
    try:
        policy.check_ip(ip, port=port)
    except BlockedAddress as exc:
        return exc
    return None


@settings(PROPERTY, max_examples=200)
@given(addresses, st.integers(min_value=0, max_value=128), ports, ports)
def test_a_network_that_contains_the_address_opens_it(
    ip: IPAddress, prefix: int, port: int, other_port: int
) -> None:
    # Without a port: on every port.
    assert refusal(SsrfGuard([AllowedNetwork(network_around(ip, prefix))]), ip, port) is None
    # With one: on that port.
    assert refusal(SsrfGuard([AllowedNetwork(network_around(ip, prefix), port)]), ip, port) is None
    if isinstance(ip, V6) and ip.ipv4_mapped is not None:
        # Opening an IPv4 network opens its IPv4-mapped spelling too, on the same ports.
        around = network_around(ip.ipv4_mapped, prefix)
        assert refusal(SsrfGuard([AllowedNetwork(around)]), ip, other_port) is None
        assert refusal(SsrfGuard([AllowedNetwork(around, port)]), ip, port) is None


@settings(PROPERTY, max_examples=200)
@given(addresses, st.integers(min_value=0, max_value=128), ports, ports)
def test_an_entry_with_a_port_opens_no_other_port(
    ip: IPAddress, prefix: int, port: int, other_port: int
) -> None:
    """Allowing a local receiver does not open the API's port or the database's."""
    assume(other_port != port)
    policy = SsrfGuard([AllowedNetwork(network_around(ip, prefix), port)])
    exc = refusal(policy, ip, other_port)
    assert (exc is None) == (classify(ip) is None)


@settings(PROPERTY, max_examples=200)
@given(addresses, ports, st.lists(entries, max_size=3))
def test_outside_allowed_networks_the_classification_decides(
    ip: IPAddress, port: int, allowed: list[AllowedNetwork]
) -> None:
    exc = refusal(SsrfGuard(allowed), ip, port)
    if opened_by(ip, port, allowed):
        assert exc is None
    else:
        reason = classify(ip)
        assert (exc is None) == (reason is None)
        if exc is not None:
            assert exc.reason == reason
            assert exc.address == ip


@settings(PROPERTY, max_examples=200)
@given(entries)
def test_an_entry_reads_back_from_its_spelling(entry: AllowedNetwork) -> None:
    assert AllowedNetwork.parse(str(entry)) == entry
    assert AllowedNetwork.parse(f" {entry} ") == entry


# --- IP literals ----------------------------------------------------------------------------


class NoDns:
    """A resolver that records what it was asked and finds nothing."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[IPAddress]:
        self.asked.append(host)
        raise OSError("no DNS in this test")


def outcome(host: str) -> tuple[str, IPAddress | None]:
    """("allowed" | "blocked", address) for a literal, ("resolved", None) for a name."""
    resolver = NoDns()
    policy = SsrfGuard(resolver=resolver)
    answers: list[IPAddress] = []
    blocked: BlockedAddress | None = None
    try:
        answers = asyncio.run(policy.resolve_checked(host, port=443))
    except BlockedAddress as exc:
        blocked = exc
    except ResolutionFailed:
        assert resolver.asked == [host]
        return "resolved", None
    assert not resolver.asked
    if blocked is not None:
        assert blocked.reason == classify(blocked.address)
        return "blocked", blocked.address
    assert len(answers) == 1
    return "allowed", answers[0]


def assert_literal(host: str, ip: IPAddress) -> None:
    verdict, address = outcome(host)
    assert address is not None, f"{host!r} was not taken as an IP literal"
    assert int(address) == int(ip)
    assert address.version == ip.version
    assert verdict == ("allowed" if classify(ip) is None else "blocked")


@st.composite
def inet_aton_spellings(draw: st.DrawFn, ip: V4) -> str:
    """`ip` as 1-4 dot-separated numbers, each in decimal, octal (0...) or hex (0x...)."""
    count = draw(st.integers(min_value=1, max_value=4))
    number = int(ip)
    head = [(number >> (8 * (3 - i))) & 0xFF for i in range(count - 1)]
    last = number & ((1 << (8 * (4 - len(head)))) - 1)
    parts = []
    for value in [*head, last]:
        base = draw(st.sampled_from(["dec", "oct", "hex"]))
        zeros = "0" * draw(st.integers(min_value=0, max_value=3))
        if base == "dec":
            parts.append(str(value))
        elif base == "oct":
            parts.append("0" + zeros + format(value, "o"))
        else:
            digits = format(value, "x")
            digits = draw(st.sampled_from([digits, digits.upper()]))
            parts.append(draw(st.sampled_from(["0x", "0X"])) + zeros + digits)
    return ".".join(parts) + draw(st.sampled_from(["", "."]))


@settings(PROPERTY, max_examples=200)
@given(v4_addresses.flatmap(lambda ip: st.tuples(st.just(ip), inet_aton_spellings(ip))))
def test_every_inet_aton_spelling_of_an_ipv4_address_is_that_address(
    case: tuple[V4, str],
) -> None:
    ip, spelling = case
    assert_literal(spelling, ip)


@settings(PROPERTY, max_examples=200)
@given(v6_any | v4_addresses.map(lambda v4: V6(0xFFFF << 32 | int(v4))), st.data())
def test_every_spelling_of_an_ipv6_address_is_that_address(ip: V6, data: st.DataObject) -> None:
    spellings = [ip.compressed, ip.exploded, ip.exploded.upper()]
    if ip.ipv4_mapped is not None:
        spellings.append(f"::ffff:{ip.ipv4_mapped}")
    spelling = data.draw(st.sampled_from(spellings))
    spelling += data.draw(st.sampled_from(["", "%eth0", "%1"]))
    spelling = data.draw(st.sampled_from([spelling, f"[{spelling}]", f"{spelling}."]))
    assert_literal(spelling, ip)


_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def reference_inet_aton(text: str) -> V4 | None:
    """inet_aton's grammar (glibc, BSD): 1-4 parts, each hex 0x.., octal 0.., or decimal;
    the leading parts are one byte each, the last fills the rest. Plus the module's one
    documented extension: a single trailing dot is ignored."""
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    values = [
        int(p[2:], 16) if p[:2].lower() == "0x" else int(p, 8) if p[0] == "0" else int(p)
        for p in parts
    ]
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return V4(number)


# Parts glued from number-ish tokens, so that odd mixes ("0x0X0", "08", "0o7") are common.
host_parts = st.lists(
    st.sampled_from(["0", "0x", "0X", "0o", "1", "7", "8", "9", "f", "A", "ff", "377", "400"]),
    max_size=4,
).map("".join)


@settings(PROPERTY, max_examples=200)
@given(st.lists(host_parts, min_size=1, max_size=5).map(".".join))
@example("0x0x7f.1")  # Python's int(..., 16) accepts a second "0x"; inet_aton does not
@example("00o177.1")  # likewise int(..., 8) and "0o"
@example("1.0x0x1")
def test_a_host_is_an_ipv4_literal_exactly_when_inet_aton_reads_it_as_one(host: str) -> None:
    expected = reference_inet_aton(host)
    verdict, address = outcome(host)
    if expected is None:
        assert verdict == "resolved", f"{host!r} is a name, but was read as {address}"
    else:
        assert address == expected


@pytest.mark.parametrize(
    ("host", "ip"),
    [("127.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1")],
)
def test_reference_inet_aton_reads_known_spellings(host: str, ip: str) -> None:
    assert reference_inet_aton(host) == V4(ip)
