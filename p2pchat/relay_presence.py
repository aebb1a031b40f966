"""The node's presence at a relay: keeps a :class:`~p2pchat.relay.link.RelayRegistration` alive and hands the
chats it brings in to the node; tells the UI once per loss of the registration, not on every retry."""

from __future__ import annotations

from collections.abc import Callable

from p2pchat.chat_protocol import CHAT
from p2pchat.events import Event, NodeError
from p2pchat.foundation.identity import Identity
from p2pchat.relay.link import RelayLink, RelayRegistration


class RelayPresence:
    def __init__(self, emit: Callable[[Event], None], identity: Identity, relay_ip: str, relay_port: int, *,
                 source_ip: str, network: str, timeout: float, on_invite: Callable[[RelayLink], None],
                 relay_key: bytes | None = None) -> None:
        self._emit = emit
        self._registered = True      # so that a first failure is reported too
        self._closed = False
        self.registration = RelayRegistration(
            identity, relay_ip, relay_port, on_invite=on_invite, inner_protocol=CHAT, source_ip=source_ip,
            network=network, timeout=timeout, on_state=self._on_state, relay_key=relay_key)

    @property
    def state_text(self) -> str:
        return self.registration.state_text

    def start(self) -> None:
        self.registration.start()

    def close(self) -> None:
        self._closed = True
        self.registration.close()

    def _on_state(self, registered: bool, text: str) -> None:
        was, self._registered = self._registered, registered
        if was and not registered and not self._closed:
            self._emit(NodeError(text=text))
