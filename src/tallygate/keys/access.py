"""Where a key may be used from: one rule for the gateway, ``/api/v1`` and page sign-in.

``allowed_ips`` and ``allowed_models`` read the same way: ``None`` (the field left out) is no
restriction; a list allows only what it names, so an empty list allows nothing.

An IPv4 client reached over an IPv6 socket arrives as ``::ffff:a.b.c.d``; it is the IPv4
address ``a.b.c.d`` for every check, so ``10.0.0.0/8`` matches it (and an IPv4-mapped
network such as ``::ffff:10.0.0.0/104`` matches the plain IPv4 client as well).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(text: str | None) -> Address | None:
    """The client's address with an IPv4-mapped IPv6 address unwrapped; None if unreadable."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # no zone index
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=4096)
def _network(text: str) -> Network:
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 \
            and network.network_address.ipv4_mapped is not None:
        # ::ffff:10.0.0.0/104 is 10.0.0.0/8 written for an IPv6 socket.
        return ipaddress.IPv4Network(
            (network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network


def ip_allowed(allowed: list[str] | None, client_ip: str | None) -> bool:
    """Whether a key limited to ``allowed`` may be used from ``client_ip``."""
    if allowed is None:
        return True
    address = client_address(client_ip)
    if address is None:
        return False
    for text in allowed:
        network = _network(text)
        if network.version == address.version and address in network:
            return True
    return False
