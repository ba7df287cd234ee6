"""The SSRF guard: a webhook reaches only global unicast addresses, and exactly the one validated.

The host is resolved once per delivery round; every address it resolves to must pass, and the
sender then connects to the first of those addresses itself (``Host`` and TLS SNI keep the name),
so a DNS answer that changes between the check and the connection (rebinding) cannot redirect it.
Operators admit on-premises receivers with GPUFLEET_WEBHOOK_ALLOW_NETWORKS (CIDRs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gpufleet.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IETF protocol assignments (192.0.0.8, 192.0.0.170, ...): not destinations, though some Python
# versions call parts of the block private and others not.
_IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")


class WebhookRefused(InvalidInput):
    """A URL the guard refuses; ``rule`` names why (422)."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message, field="url", rule=rule)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Target:
    """A URL checked and resolved: connect to ``address``, send ``host`` as Host and SNI."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  # path and query
    address: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def parse_networks(spec: str) -> list[Network]:
    """``"10.0.0.0/8, fd00::/8"`` -> networks; a bad entry is a configuration error naming it."""
    out: list[Network] = []
    for item in (s.strip() for s in spec.split(",")):
        if item:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"GPUFLEET_WEBHOOK_ALLOW_NETWORKS: {item!r} is not a CIDR network") from exc
    return out


def address_rule(ip: IPAddress) -> str | None:
    """The rule a destination address breaks, or None for a global unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 destination are judged by it: mapped (::ffff:a.b.c.d),
        # 6to4 (2002:AABB:CCDD::) and Teredo (2001:0::/32, the client address obfuscated).
        if ip.ipv4_mapped is not None:
            return address_rule(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return address_rule(ip.sixtofour)
        if ip.teredo is not None:
            return address_rule(ip.teredo[1])
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"  # 169.254.169.254, the cloud metadata service, is here
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "cgnat"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _IETF_PROTOCOL:
        return "reserved"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not-global"
    return None


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of a webhook URL, or WebhookRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"url: not a valid URL ({exc})", rule="url") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused("url: only http and https URLs are allowed", rule="scheme")
    if not parts.hostname:
        raise WebhookRefused("url: has no host", rule="url")
    if parts.username or parts.password:
        raise WebhookRefused("url: must not carry credentials; authenticate with the signature", rule="credentials")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80), target


async def system_resolver(host: str, port: int) -> list[str]:
    infos: list[Any] = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        if addr not in seen:
            seen.append(addr)
    return seen


async def resolve(url: str, allow: Sequence[Network], resolver: Resolver = system_resolver) -> Target:
    """Check ``url`` and resolve it; WebhookRefused (422, naming the rule) when any address is refused."""
    scheme, host, port, target = split_url(url)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await resolver(host, port)
        except OSError as exc:
            raise WebhookRefused(f"url: {host} does not resolve ({exc})", rule="dns") from exc
        if not addresses:
            raise WebhookRefused(f"url: {host} does not resolve", rule="dns")
    for text in addresses:
        ip = ipaddress.ip_address(text)
        if any(ip in net for net in allow if net.version == ip.version):
            continue
        rule = address_rule(ip)
        if rule is not None:
            raise WebhookRefused(
                f"url: {host} resolves to {ip}, a {rule} address; webhooks reach only global unicast "
                "addresses (an operator admits on-premises networks with GPUFLEET_WEBHOOK_ALLOW_NETWORKS)",
                rule=rule,
            )
    return Target(url=url, scheme=scheme, host=host, port=port, target=target, address=addresses[0])
