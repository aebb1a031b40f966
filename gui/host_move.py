"""``p2pchat gui --host auto``: the window follows this machine's address while it runs.

One :class:`~p2pchat.foundation.host_address.HostFollower` (its thread owned and joined by :class:`HostMove`)
watches the address. When it changes, the parts move in this order: the ledger node (the app's own child process
listens at the new address and publishes the updated record; see :meth:`gui.ledger_runtime.LedgerRuntime.move`),
the "your identity" actions, the chat node (listens there, asks the moved ledger node, registers at the relay
again), and last the window, which shows the new address in the identity panel and one plain line in the status
line. A part that cannot move (the port is taken at the new address) raises a UserError: the status line says so
(⚠), the follower logs it and tries again at its next look; the parts that already moved are not moved twice.
"""

from __future__ import annotations

import logging
from typing import Protocol

from gui.ledger_actions import LedgerActions
from gui.ledger_runtime import LedgerRuntime
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.host_address import HostFollower, HostWatch

log = logging.getLogger(__name__)


class MovingNode(Protocol):
    """What :class:`HostMove` needs of :class:`p2pchat.node.ChatNode`."""

    host: str

    @property
    def address(self) -> str: ...
    def move_to(self, old: str, new: str) -> None: ...


class AddressShown(Protocol):
    """What :class:`HostMove` needs of :class:`gui.window.ChatWindow` (safe to call from another thread)."""

    def address_changed(self, address: str, line: str) -> None: ...


def moved_line(new: str, runtime: LedgerRuntime) -> str:
    """The one line the user sees when the address changed."""
    if runtime.follows_host:
        return f"This computer's address changed to {new}; your ledger record is being updated"
    return (f"This computer's address changed to {new}; the ledger node you use ({runtime.address}) is on another "
            "computer and does not update your record")


class HostMove:
    """Moves the window's ledger node, actions and chat node with this machine's address (module docstring)."""

    def __init__(self, watch: HostWatch, *, runtime: LedgerRuntime, node: MovingNode, window: AddressShown,
                 actions: LedgerActions | None = None) -> None:
        self.runtime, self.node, self.window, self.actions = runtime, node, window, actions
        self._follower = HostFollower(watch, self._moved, name="gui-host-watch")

    def start(self) -> HostMove:
        self._follower.start()
        return self

    def close(self) -> None:
        """Stop watching and join the thread (a move under way finishes first; each of its steps is bounded)."""
        self._follower.close()

    def _moved(self, old: str, new: str) -> None:
        log.info("moving the window's nodes from %s to %s", old, new)
        try:
            self.runtime.move(new)
            if self.actions is not None:
                self.actions.move(self.runtime.address, source_ip=new)
            if self.node.host != new:
                self.node.move_to(self.node.host, new)
        except UserError as exc:    # the follower logs it and tries again at its next look
            self.window.address_changed(self.node.address, f"⚠ This computer's address changed to {new}, but {exc}; "
                                                           "trying again in a few seconds")
            raise
        self.window.address_changed(self.node.address, moved_line(new, self.runtime))
