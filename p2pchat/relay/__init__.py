"""The relay: a fallback path that pairs two clients who proved their keys and forwards their opaque frames.

Server: :class:`RelayServer` (run it with ``p2pchat relay``). Clients: :func:`open_relay_link` (caller),
:class:`RelayRegistration` (a host that wants to be reachable) and :class:`RelayLink` (the paired stream, used
by the chat node like a direct ``FramedSocket``). See docs/relay.md.
"""

from p2pchat.relay.callers import KeySetCallers, LedgerCallers
from p2pchat.relay.link import RelayLink, RelayRegistration, backoff_delay, open_relay_link, parse_relay
from p2pchat.relay.protocol import RelayError
from p2pchat.relay.secure import RelayKey
from p2pchat.relay.server import RelayServer, RelaySession

__all__ = ["KeySetCallers", "LedgerCallers", "RelayError", "RelayKey", "RelayLink", "RelayRegistration",
           "RelayServer", "RelaySession", "backoff_delay", "open_relay_link", "parse_relay"]
