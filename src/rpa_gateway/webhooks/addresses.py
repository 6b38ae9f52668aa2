"""Where webhooks may go.  A URL must be https, or http to a host in
``RPA_WEBHOOK_ALLOW_HOSTS``; and unless ``RPA_WEBHOOK_ALLOW_PRIVATE``, no address it leads
to may be private, loopback, link-local (cloud metadata lives there), multicast or
otherwise not the public internet.  The address is checked when the connection is made,
on the addresses the name resolves to then (:class:`GuardedResolver`), so a name pointed
at an inner address after the endpoint was registered is still refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

# Metadata services reachable from cloud machines, named even where a range covers them.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
MAX_URL_LENGTH = 2048


class RefusedAddress(OSError):
    """The name leads only to addresses webhooks may not reach."""


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def forbidden(address: str) -> bool:
    """An address that is not the public internet, itself or an IPv4 address it carries
    (mapped, compatible, NAT64, 6to4, Teredo)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return True
    return any(_inner(a) for a in (ip, *_carried(ip)))


def _inner(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip in METADATA_ADDRESSES or not ip.is_global or ip.is_multicast


def _carried(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    carried = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if any(ip in prefix for prefix in _NAT64) or ip in _IPV4_COMPATIBLE:
        carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [a for a in carried if a is not None]


def url_problem(url: str, allow_hosts: Collection[str], allow_private: bool) -> str | None:
    """Why the URL cannot be a webhook endpoint, or None.  A host given as an address is
    checked now; a name, at each connection."""
    if len(url) > MAX_URL_LENGTH:
        return f"url: at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "url: not a valid URL"
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        return "url: must be an https:// URL"
    if parts.username is not None or parts.password is not None:
        return "url: credentials in the URL are not taken (the signature authenticates)"
    if parts.scheme == "http" and host not in allow_hosts:
        return f"url: http:// only to hosts in RPA_WEBHOOK_ALLOW_HOSTS; {host} is not one"
    if not allow_private and _is_address(host) and forbidden(host):
        return (
            f"url: {host} is a private, loopback, link-local or metadata address"
            " (RPA_WEBHOOK_ALLOW_PRIVATE allows them)"
        )
    return None


def literal_refused(url: str, allow_private: bool) -> str | None:
    """Why a URL whose host is an address may not be reached now (None: it may, or its
    host is a name, which the resolver checks).  Connections to a literal address skip
    the resolver, and an endpoint may date from when private addresses were allowed."""
    host = (urlsplit(url).hostname or "").lower()
    if allow_private or not _is_address(host) or not forbidden(host):
        return None
    return f"{host} is a private, loopback, link-local or metadata address"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class GuardedResolver(AbstractResolver):
    """Resolves as ``inner`` does, then keeps only addresses webhooks may reach: the
    connection is made to one of those, never to one checked earlier."""

    def __init__(self, inner: AbstractResolver, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return found
        allowed = [r for r in found if not forbidden(str(r["host"]))]
        if not allowed:
            raise RefusedAddress(
                f"{host} resolves to a private, loopback, link-local or metadata address"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def describe(exc: BaseException) -> str:
    """A connection error, as a delivery records it."""
    cause: Any = exc
    while cause is not None:
        if isinstance(cause, RefusedAddress):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
