"""``p2pchat demo``: the whole flow on one machine.

With a display (and the GUI installed) it opens the two demo windows (``gui.demo.main``). Otherwise, or with
``--headless``, :func:`run_headless` narrates it in the terminal: a two-node ledger network on 127.0.0.x, the
four handshake steps and what each one proved, a conversation across several key rotations, a replayed and a
tampered frame injected on the wire and refused, and a clean shutdown. Exit status 0 when everything behaved.
"""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from p2pchat.chat_protocol import CHAT
from p2pchat.demo_world import DEMO_HOSTS, DemoUser, DemoWorld
from p2pchat.display import Printer, visible
from p2pchat.events import (
    DeliveryReceipt,
    Event,
    IncomingChat,
    MessageReceived,
    Notice,
    SessionEnded,
    StepResult,
)
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import Identity
from p2pchat.steps import Step

ROTATE_EVERY = 2    # a short period so that a short conversation shows several rotations
WAIT = 20.0      # seconds any one expected event may take before the demo gives up

WHAT_IT_PROVED = {
    Step.CONNECT: "{a} opened a TCP connection from {a_ip} to {b_ip}; both sent a hello (protocol version, "
                  "network, nickname, claimed address) and {b} accepted the chat.",
    Step.SWAP_KEYS: "each side sent its RSA-3072 public key, a fresh challenge and a fresh X25519 half, and looked "
                    "the other up in the ledger by the address it actually saw. The keys match the mined records, "
                    "so a stranger's key would have stopped the chat here.",
    Step.AUTHENTICATE: "each side made one signature (RSA-PSS) over a hash of everything said so far, fresh "
                       "challenges and X25519 halves included, {b} only after {a}'s verified: both hold their "
                       "private keys, and a signature recorded in another session would not verify in this one.",
    Step.AGREE_KEY: "the X25519 halves both signed in step 3 gave one AES-256-GCM key per direction (HKDF-SHA256) "
                    "and a confirmation both sides checked. The X25519 private keys are already erased.",
}

CONVERSATION = [
    ("alice", "Hi Bob! Is this really you?"),
    ("bob", "It is: the ledger binds my address to my key, and I just proved I hold it."),
    ("alice", "Nice. So nobody in between can read this?"),
    ("bob", "Only the two of us have the AES keys, and they keep changing under us."),
    ("alice", "How often?"),
    ("bob", "Every 2 messages per direction in this demo (10 by default). Watch the rotation notes."),
    ("alice", "Old keys are erased, right?"),
    ("bob", "Yes: a key stolen tomorrow cannot decrypt what we said today."),
    ("alice", "Ünïcödé and emoji work too 🙂"),
    ("bob", "Of course. Let's try to break it."),
]


class Inbox:
    """Events of one user's node, kept so the demo can wait for the next one of a kind."""

    def __init__(self, user: DemoUser) -> None:
        assert user.chat is not None
        self.user = user
        self.events: list[Event] = []
        self.taken: set[int] = set()      # indexes of events already returned by expect
        self.shown: set[int] = set()      # indexes of rotation notices already narrated

    def pump(self) -> None:
        assert self.user.chat is not None
        while True:
            try:
                self.events.append(self.user.chat.events.get_nowait())
            except queue.Empty:
                return

    def expect(self, match: Callable[[Event], bool], what: str, timeout: float = WAIT) -> Any:
        """The first unseen event that ``match``es (events before it stay available to later calls)."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            for i, ev in enumerate(self.events):
                if i not in self.taken and match(ev):
                    self.taken.add(i)
                    return ev
            if time.monotonic() > deadline:
                raise DemoFailed(f"{self.user.nickname} did not see {what} within {timeout:g} s")
            time.sleep(0.01)

    def notices(self, kind: str) -> list[Notice]:
        self.pump()
        return [e for e in self.events if isinstance(e, Notice) and e.kind == kind]


class DemoFailed(UserError):
    """Something in the demo did not happen as it should."""


class Narrator:
    """Writes the demo's story through the terminal's one :class:`~p2pchat.display.Printer` (the demo prints
    event texts and nicknames, which come from the network)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._printer = Printer(out)

    def __call__(self, text: str = "") -> None:
        self._printer.line(text)

    def section(self, title: str) -> None:
        self("")
        self(title)
        self("─" * len(title))


def _flip_bit_in_box(frame: bytes) -> bytes:
    """The same sealed frame with one bit of its ciphertext flipped (what a meddling router could do)."""
    msg = CHAT.decode(frame[4:])
    box = bytearray(msg["box"])
    box[len(box) // 2] ^= 0x01
    return CHAT.encode("sealed", epoch=msg["epoch"], counter=msg["counter"], box=bytes(box))


def run_headless(out: TextIO = sys.stdout, *, hosts: Sequence[str] = DEMO_HOSTS, chat_port: int = CHAT_PORT,
                 ledger_port: int = LEDGER_PORT, identities: Sequence[Identity] | None = None,
                 keep: bool = False) -> int:
    """The narrated terminal demo; returns the exit status."""
    say = Narrator(out)
    say("p2pchat demo — two people, one machine, no server.")
    say("Everything below runs on loopback addresses of this computer: two ledger nodes that mine and gossip the")
    say("certificate ledger, and two chat nodes that talk to each other directly.")
    say.section("Setting up")
    if identities is None:
        say("· making two RSA-3072 identity keys (a second or two)…")
    world = DemoWorld(hosts=tuple(hosts), chat_port=chat_port, ledger_port=ledger_port, identities=identities,
                      rotate_every=ROTATE_EVERY, keep=keep, say=lambda text: say(f"· {text}"))
    before = {t.ident for t in threading.enumerate()}
    try:
        world.start()
    except UserError as exc:
        say(f"✗ could not set up the demo: {exc}")
        return 1
    try:
        for user in world.users:
            assert user.record is not None
            say(f"✓ {user.nickname}'s record binds {user.host} to key {user.identity.short_fingerprint}: "
                f"mined in block {user.record.height}, seen by every node")
        if keep and world.root is not None:
            say(f"· data kept in {world.root}")
        _conversation(world, say)
    except DemoFailed as exc:
        say(f"✗ {exc}")
        world.close()
        return 1
    finally:
        if world.users:
            say.section("Shutting down")
            world.close()
    left = [t for t in threading.enumerate() if t.ident not in before]
    if left:
        say(f"✗ threads still running: {', '.join(t.name for t in left)}")
        return 1
    say("✓ chat nodes, ledger nodes and miners stopped; every thread joined.")
    say("")
    say("That was the whole flow. Try it between two terminals with `p2pchat listen` and `p2pchat chat PEER`,")
    say("or with a display run `p2pchat demo` for two chat windows.")
    return 0


def _conversation(world: DemoWorld, say: Narrator) -> None:
    alice, bob = world.users[0], world.users[1]
    assert alice.chat is not None and bob.chat is not None
    a_in, b_in = Inbox(alice), Inbox(bob)
    inbox = {alice.nickname: a_in, bob.nickname: b_in}

    say.section(f"The four steps ({alice.nickname} opens a chat with {bob.host})")
    sid = alice.chat.open_session(bob.host)
    alice.chat.run_all(sid)
    asked = b_in.expect(lambda e: isinstance(e, IncomingChat), "the incoming chat")
    say(f"{bob.nickname}'s node: \"Incoming chat from {asked.nickname} at {asked.peer_address}. Accept?\" → yes")
    bob.chat.accept(asked.session, True)
    bsid = asked.session
    names = {"a": alice.nickname, "b": bob.nickname, "a_ip": alice.host, "b_ip": bob.host}
    for step in Step:
        ev = a_in.expect(_step_result(step), f"step {step.label}")
        if not ev.ok:
            raise DemoFailed(f"step {step.label} failed: {ev.detail}")
        say(f"✓ {step.label} — {ev.detail}")
        say(f"    {WHAT_IT_PROVED[step].format(**names)}")
        b_in.expect(_step_result(step, ok=True), f"step {step.label}")
    a_info, b_info = alice.chat.session_info(sid), bob.chat.session_info(bsid)
    if a_info.safety_number != b_info.safety_number:
        raise DemoFailed("the two sides show different safety numbers")
    say(f"Both screens show the safety number {a_info.safety_number} (to compare by voice if in doubt).")

    say.section(f"Chatting (path: {a_info.path}; keys rotate every {world.rotate_every} messages per direction)")
    sessions = {alice.nickname: (alice, sid), bob.nickname: (bob, bsid)}
    for sender, text in CONVERSATION:
        _say_line(sessions, inbox, sender, text, say)
    rotations = len(a_in.notices("rotation")) + len(b_in.notices("rotation"))
    epoch_a = alice.chat.session_info(sid).key_epoch
    epoch_b = bob.chat.session_info(bsid).key_epoch
    say(f"{rotations // 2} key rotations so far: {alice.nickname} sends under key epoch {epoch_a}, "
        f"{bob.nickname} under epoch {epoch_b}; every older key is gone.")
    if min(epoch_a or 0, epoch_b or 0) < 2:
        raise DemoFailed("the keys did not rotate twice in each direction")

    say.section("An attacker on the wire")
    captured: list[bytes] = []
    alice.chat.set_wire_hook(sid, _recorder(captured))
    _say_line(sessions, inbox, alice.nickname, "Meet at the station at 6.", say)
    alice.chat.set_wire_hook(sid, None)
    refused_before = len(b_in.notices("refused"))
    say(f"· replay: the frame that carried \"Meet at the station at 6.\" is sent to {bob.nickname} again")
    alice.chat.inject_frame(sid, captured[0])
    ev = b_in.expect(lambda e: isinstance(e, Notice) and e.kind == "refused", "the replay being refused")
    say(f"  ! {bob.nickname}'s node refused it: {ev.text}")

    flipped: list[bool] = []

    def flip_once(frame: bytes) -> bytes:
        if flipped:
            return frame
        flipped.append(True)
        return _flip_bit_in_box(frame)

    say("· tampering: one bit of the next message's ciphertext is flipped on the way")
    alice.chat.set_wire_hook(sid, flip_once)
    alice.chat.send_text(sid, "Actually, make it 7.")
    alice.chat.set_wire_hook(sid, None)
    _say_line(sessions, inbox, alice.nickname, "Did you get my last message?", say)
    say(f"  ! {bob.nickname}'s node refused the altered frame too, without a second notice: refusals are "
        "reported once, and a third one would end the chat")
    for notice in b_in.notices("refused")[refused_before + 1:]:
        say(f"  ! {bob.nickname}'s node: {notice.text}")
    _say_line(sessions, inbox, bob.nickname, "No: it was altered on the way, so it was never shown. Say it again?",
              say)
    _say_line(sessions, inbox, alice.nickname, "7 at the station. See you!", say)
    shown = [e.text for e in b_in.events if isinstance(e, MessageReceived)]
    if "Actually, make it 7." in shown or shown.count("Meet at the station at 6.") != 1:
        raise DemoFailed("a replayed or altered message was shown")
    say("Nothing replayed or altered was shown, and the chat went on.")

    say.section("Goodbye")
    alice.chat.end_session(sid)
    ended = b_in.expect(lambda e: isinstance(e, SessionEnded), "the goodbye")
    say(f"{bob.nickname}'s node: chat ended — {ended.reason}")
    a_in.expect(lambda e: isinstance(e, SessionEnded), "the end of the chat")


def _say_line(sessions: dict[str, tuple[DemoUser, str]], inbox: dict[str, Inbox], sender: str, text: str,
              say: Narrator) -> None:
    """``sender`` sends ``text``; wait until the other side shows it and the receipt comes back."""
    user, sid = sessions[sender]
    other = next(name for name in sessions if name != sender)
    assert user.chat is not None
    msg_id = user.chat.send_text(sid, text)
    got = inbox[other].expect(lambda e: isinstance(e, MessageReceived) and e.text == text, f"\"{text}\"")
    inbox[sender].expect(lambda e: isinstance(e, DeliveryReceipt) and e.msg_id == msg_id, "the delivery receipt")
    stamp = time.strftime("%H:%M:%S", time.localtime(got.received_at))
    say(f"[{stamp}] {sender} → {other}: {text}  ✓✓")
    for owner in (sender, other):
        box = inbox[owner]
        for i, ev in enumerate(box.events):
            if isinstance(ev, Notice) and ev.kind == "rotation" and i not in box.shown:
                box.shown.add(i)
                epoch = re.search(r"epoch (\d+)", ev.text)
                if "our sending key" in ev.text and epoch:   # told once, by the side whose key it is
                    say(f"    · {owner}'s sending key rotated to epoch {epoch.group(1)}; the old key is erased")


def main(*, headless: bool = False, keep: bool = False, hosts: Sequence[str] | None = None) -> int:
    """``p2pchat demo``: the windows when possible, else (or with ``headless``) the terminal demo."""
    hosts = tuple(hosts) if hosts else DEMO_HOSTS
    if not headless:
        try:
            import gui.demo
        except ImportError as exc:     # e.g. no Tk on this Python: the terminal demo shows the same flow
            print(f"p2pchat demo: no windows ({visible(str(exc))}); running the terminal demo", file=sys.stderr)
        else:
            return int(gui.demo.main(keep=keep, hosts=hosts) or 0)
    return run_headless(sys.stdout, hosts=hosts, keep=keep)


def _step_result(step: Step, *, ok: bool = False) -> Callable[[Event], bool]:
    """Matches the StepResult of ``step`` (a successful one when ``ok``)."""
    return lambda e: isinstance(e, StepResult) and e.step == step and (e.ok or not ok)


def _recorder(frames: list[bytes]) -> Callable[[bytes], bytes]:
    """A wire hook that keeps a copy of every frame and lets it pass."""
    def hook(frame: bytes) -> bytes:
        frames.append(frame)
        return frame
    return hook
