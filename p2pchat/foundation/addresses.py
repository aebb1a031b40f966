"""Parsing and formatting of ``ip`` / ``ip:port`` addresses, and the default ports."""

from __future__ import annotations

import ipaddress

from p2pchat.foundation.errors import AddressError

LEDGER_PORT = 8470
CHAT_PORT = 8471
RELAY_PORT = 8472
HOST_AUTO = "auto"    # --host auto: this machine's address, followed (p2pchat.foundation.host_address)


def normalize_ip(text: str) -> str:
    """Return the canonical text form of an IPv4/IPv6 address, or raise :class:`AddressError`."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise AddressError(f"'{text}' is not an IP address (expected something like 127.0.0.2)") from None


def check_port(port: int) -> int:
    """Return ``port`` if it is a valid TCP port number, else raise :class:`AddressError`."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise AddressError(f"{port!r} is not a TCP port (expected a number from 1 to 65535)")
    return port


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """Parse ``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port`` into ``(ip, port)``."""
    text = text.strip()
    if not text:
        raise AddressError("an address is required (expected IP or IP:PORT)")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise AddressError(f"'{text}' is not an address (expected [IPv6]:PORT)")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    ip = normalize_ip(host)
    if not port_text:
        return ip, default_port
    if not port_text.isdigit():
        raise AddressError(f"'{port_text}' in '{text}' is not a port number")
    return ip, check_port(int(port_text))


def format_address(ip: str, port: int) -> str:
    """Format ``(ip, port)`` the way :func:`parse_address` reads it back."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
