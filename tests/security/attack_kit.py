"""Tools for the attack tests: a real victim (`p2pchat listen` process) in a real ledger network, an honest
in-process peer, a raw attacker that drives the handshake core by hand, and a man-in-the-middle proxy."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pchat.chat_protocol import CHAT, Send
from p2pchat.foundation.addresses import CHAT_PORT, format_address
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket, FrameServer, connect
from p2pchat.handshake import Handshake, LedgerBinding, StepDone
from p2pchat.steps import Step
from tests.integration.chat_procs import ChatProcess


@dataclass
class Victim:
    """The `p2pchat listen --accept-all` process under attack; ``mark()``/``since()`` give a test its own output."""

    proc: ChatProcess
    ip: str
    identity: Identity
    _mark: int = 0

    def mark(self) -> None:
        self._mark = len(self.proc.lines)

    def since(self) -> str:
        return "\n".join(self.proc.lines[self._mark:])

    def wait_new(self, text: str, timeout: float = 20.0) -> str:
        """Wait until ``text`` appears in the output written since ``mark()``; returns that output."""
        from tests.integration.procs import wait_until

        wait_until(lambda: text in self.since() or self.proc.proc.poll() is not None, timeout,
                   what=f"{text!r} from the victim; it said:\n{self.since()}")
        assert self.proc.proc.poll() is None, f"the victim exited:\n{self.proc.output()}"
        return self.since()


def binding_of(identity: Identity, ip: str, nickname: str = "victim") -> LedgerBinding:
    return LedgerBinding(public_der=identity.public_der, nickname=nickname, ip=ip, port=CHAT_PORT, relay=None,
                         height=1, confirmations=1)


class RawPeer:
    """An attacker's connection that runs the real handshake core as initiator, one step at a time, so it can
    stop, skip or cheat wherever a test wants."""

    def __init__(self, identity: Identity, src_ip: str, victim: Victim, *, port: int = CHAT_PORT,
                 nickname: str = "mallory") -> None:
        self.conn = connect(victim.ip, port, CHAT, source_ip=src_ip, timeout=10)
        self.victim_binding = binding_of(victim.identity, victim.ip)
        self.sent: list[bytes] = []
        self.hs = Handshake(initiator=True, identity=identity, nickname=nickname, network="p2pchat",
                            local_address=format_address(src_ip, CHAT_PORT),
                            peer_address=format_address(victim.ip, port))

    def send_raw(self, frame: bytes) -> None:
        self.sent.append(frame)
        self.conn.send_frame(frame)

    def _act(self, events: list[Any]) -> list[Any]:
        out: list[Any] = []
        for ev in events:
            if isinstance(ev, Send):
                self.send_raw(ev.frame)
            elif type(ev).__name__ == "NeedLookup":
                out += self._act(self.hs.ledger_answer(self.victim_binding))
            else:
                out.append(ev)
        return out

    def run_step(self, step: Step, timeout: float = 10.0) -> list[Any]:
        """Start ``step`` and feed the victim's answers until it is done here (or failed)."""
        events = self._act(self.hs.start(step))
        while not any(isinstance(e, StepDone) and e.step == step for e in events):
            if any(type(e).__name__ == "Failed" for e in events):
                return events
            events += self._act(self.hs.receive(self.conn.recv(timeout)))
        return events

    def recv(self, timeout: float = 10.0) -> Message:
        return self.conn.recv(timeout)

    def close(self) -> None:
        self.conn.close()


def closed_by_peer(conn: FramedSocket, timeout: float = 10.0) -> list[Message]:
    """Frames the victim sends until it closes the connection (an ``error`` frame, typically)."""
    frames: list[Message] = []
    try:
        while True:
            frames.append(conn.recv(timeout))
    except UserError:
        return frames


def raw_socket(victim: Victim, src_ip: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((src_ip, 0))
    sock.settimeout(10)
    sock.connect((victim.ip, CHAT_PORT))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


@dataclass
class MitmProxy:
    """Listens on ``listen_ip`` (any port), forwards every connection to ``target`` from ``source_ip``, frame by
    frame, passing each through ``rewrite(direction, message, frame) -> frame`` ("up": client → target)."""

    listen_ip: str
    target: tuple[str, int]
    source_ip: str
    rewrite: Callable[[str, Message, bytes], bytes]
    seen: list[tuple[str, str]] = field(default_factory=list)     # (direction, frame type)

    def __post_init__(self) -> None:
        self._server = FrameServer(self.listen_ip, 0, CHAT, self._handle, name="test-mitm", timeout=10)
        self.port = self._server.port
        self._lock = threading.Lock()

    def start(self) -> MitmProxy:
        self._server.start()
        return self

    def _handle(self, client: FramedSocket) -> None:
        upstream = connect(self.target[0], self.target[1], CHAT, source_ip=self.source_ip, timeout=10)
        down = threading.Thread(target=self._pump, args=(upstream, client, "down"), name="test-mitm-down")
        down.start()
        try:
            self._pump(client, upstream, "up")
        finally:
            upstream.close()
            client.close()
            down.join()

    def _pump(self, src: FramedSocket, dst: FramedSocket, direction: str) -> None:
        try:
            while True:
                msg = src.recv(30)
                with self._lock:
                    self.seen.append((direction, msg.type))
                frame = CHAT.encode(msg.type, **{k: v for k, v in msg.fields.items() if v is not None})
                dst.send_frame(self.rewrite(direction, msg, frame))
        except UserError:
            src.close()
            dst.close()

    def types(self) -> set[str]:
        with self._lock:
            return {t for _, t in self.seen}

    def close(self) -> None:
        self._server.close()

