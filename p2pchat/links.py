"""The seams between the chat node and what it talks through: a :class:`Link` (a direct
:class:`~p2pchat.foundation.transport.FramedSocket` or a :class:`~p2pchat.relay.link.RelayLink`) and a
:class:`Binding` (what a :class:`~p2pchat.peer_directory.PeerDirectory` answers).

Both are structural protocols: the node depends on these methods only, and mypy checks that both link kinds
provide them.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Protocol

from p2pchat.foundation.codec import Frame, Message
from p2pchat.foundation.transport import FramedSocket

if TYPE_CHECKING:
    from ledger.disputes import Dispute

log = logging.getLogger(__name__)

KEEPALIVE = (30, 10, 3)     # TCP keepalive: idle seconds, probe interval, probes


class Link(Protocol):
    """A stream of chat frames to one peer."""

    peer: tuple[str, int]

    @property
    def peer_text(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    @property
    def buffered_messages(self) -> int:
        """Complete messages already received that ``recv`` returns without waiting."""
        ...

    def recv(self, timeout: float | None = None) -> Message: ...

    def send_frame(self, frame: Frame | memoryview) -> None: ...

    def send_nowait(self, data: Frame | memoryview) -> int:
        """Write what can be written at once; the number of bytes taken (0: try later)."""
        ...

    def close(self) -> None: ...


class Binding(Protocol):
    """A peer's ledger binding, as a directory returns it (``VerifiedBinding`` or ``DirectoryEntry``)."""

    @property
    def public_der(self) -> bytes: ...

    @property
    def nickname(self) -> str: ...

    @property
    def ip(self) -> str | None: ...

    @property
    def port(self) -> int | None: ...

    @property
    def relay(self) -> str | None: ...

    @property
    def height(self) -> int: ...

    @property
    def confirmations(self) -> int: ...

    @property
    def fingerprint(self) -> bytes: ...

    @property
    def disputed(self) -> Dispute | None: ...   # the ledger node marked the IP binding disputed (ledger/disputes.py)


def enable_keepalive(link: Link) -> None:
    """TCP keepalive on a direct link, so a vanished peer of a quiet chat is noticed (a relay link pings)."""
    if not isinstance(link, FramedSocket):
        return
    try:
        link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            idle, interval, count = KEEPALIVE
            link.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            link.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            link.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    except OSError:
        log.debug("could not enable TCP keepalive")


def shutdown_write(link: Link) -> None:
    """Half-close a direct link (our FIN follows the last frame; the reader reads on until the peer closes);
    any other link is closed outright."""
    if isinstance(link, FramedSocket):
        try:
            link.sock.shutdown(socket.SHUT_WR)
            return
        except OSError:
            pass
    link.close()


def release(link: Link) -> None:
    """Free what a closed link still buffers (called by its reader, the only thread that reads it)."""
    if isinstance(link, FramedSocket):
        link.discard_buffers()


def set_frame_limit(link: Link, limit: int) -> None:
    """Cap the frames ``link`` accepts from the peer at ``limit`` bytes (direct links; a relayed link's frames
    are already bounded by the relay's own frame limit)."""
    if isinstance(link, FramedSocket):
        link.frame_limit = limit


def close_after_error(link: Link, limit: int = 256 * 1024) -> None:
    """Close ``link``, first dropping what the peer sent that is already here (up to ``limit`` bytes): closing a
    TCP socket with unread data sends a reset, which can destroy our last frame (the ``error`` saying why)
    before the peer reads it."""
    if isinstance(link, FramedSocket):
        dropped = 0
        try:
            while dropped < limit:
                data = link.sock.recv(65536, socket.MSG_DONTWAIT)
                if not data:
                    break
                dropped += len(data)
        except OSError:
            pass
    link.close()
