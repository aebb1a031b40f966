"""The four handshake steps, their names and order (shared by the handshake core, the node and the UIs)."""

from __future__ import annotations

from enum import IntEnum


class Step(IntEnum):
    CONNECT = 1
    SWAP_KEYS = 2
    AUTHENTICATE = 3
    AGREE_KEY = 4

    @property
    def title(self) -> str:
        return STEP_TITLES[self]

    @property
    def label(self) -> str:
        """``"2 Swap public keys"``: how buttons and messages name a step."""
        return f"{int(self)} {self.title}"


STEP_TITLES = {
    Step.CONNECT: "Connect",
    Step.SWAP_KEYS: "Swap public keys",
    Step.AUTHENTICATE: "Authenticate",
    Step.AGREE_KEY: "Agree AES key",
}
