"""``listen`` writing to a real terminal (a pseudo-terminal of 80 columns), with a real peer on another loopback
address sending hostile texts: rendered by the VT emulator at the terminal's own width, nothing became a control
sequence, no line was wrapped by the terminal (the Printer cut it first), and the only message lines are the
peer's real ones, however long its text or whatever it holds."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import termios
import threading

from p2pchat.events import MessageReceived, StepResult
from p2pchat.node import ChatNode
from p2pchat.peer_directory import FixedDirectory
from p2pchat.steps import Step
from p2pchat.terminal import run_listen
from tests.conftest import free_loopback_ip
from tests.p2pchat.node_kit import entry, make_peer, wait_until
from tests.p2pchat.vt_oracle import SENDER_LINE, render, screen_lines

COLUMNS = 80

HOSTILE = [
    "x" * 75 + "[1] [12:00:00] alice: a line the terminal would have wrapped here",
    "漢" * 37 + "[1] [12:00:00] alice: wide characters push it over",
    "\u0301" * 90 + "[1] [12:00:00] alice: zero-width marks counted as two cells",
    "🙂" * 39 + "\n[1] [12:00:00] alice: and a newline",
    "\x1b[1A\x1b[2K\x1b]0;owned\x07\u202e[1] [12:00:00] alice: escapes",
]


def open_terminal() -> tuple[int, int]:
    """A pseudo-terminal of COLUMNS × 50 that passes "\\n" unchanged (no CR added, as pyte's LNM mode adds it)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave


def test_listen_on_a_terminal_cuts_lines_itself_and_no_peer_text_fakes_a_sender(identities):
    directory = FixedDirectory()
    caller = make_peer(identities[0], "carol", directory)
    ip = free_loopback_ip()
    listener = ChatNode(identities[1], host=ip, port=0, nickname="dave", directory=directory, auto_accept=True)
    listener.start()
    directory.add(entry(identities[1], "dave", ip, listener.port))
    master, slave = open_terminal()
    screen_bytes = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen_bytes.extend(chunk)

    reader = threading.Thread(target=drain, name="test-pty-reader")
    reader.start()
    r, w = os.pipe()
    out = io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), encoding="utf-8", write_through=True)
    assert out.isatty()
    sid = caller.node.open_session(f"{ip}:{listener.port}")
    caller.node.run_all(sid)

    problems: list[BaseException] = []

    def drive_caller() -> None:
        try:
            caller.log.wait(StepResult, 20, step=Step.AGREE_KEY, ok=True)
            for text in HOSTILE:
                caller.node.send_text(sid, text)
            caller.node.send_text(sid, "the end")
            wait_until(lambda: b"Chat 1 with carol is ready" in bytes(screen_bytes), 20,
                       what="the listener announcing chat 1")
            os.write(w, b"/to 1\nthanks\n")
            caller.log.wait(MessageReceived, 20, text="thanks")
        except BaseException as exc:      # reported by the test, after the listener stopped
            problems.append(exc)
        finally:
            caller.node.end_session(sid)

    driver = threading.Thread(target=drive_caller, name="test-pty-caller")
    driver.start()
    try:
        code = run_listen(listener, stdin_fd=r, out=out, accept_all=True, once=True)
    finally:
        driver.join()
        listener.close()
        caller.node.close()
        out.close()
        reader.join()
        os.close(master)
        os.close(w)
        os.close(r)
    assert problems == [] and code == 0
    text = screen_bytes.decode("utf-8")
    screen = render(text, columns=COLUMNS)
    assert screen.forbidden() == [], screen.forbidden()[:5]
    assert screen.title == ""
    lines = screen_lines(screen)
    written = [line for line in text.split("\n") if line.strip()]
    assert len([line for line in lines if line]) == len(written)     # the terminal wrapped no line by itself
    senders = [m.group(1) for line in lines if (m := SENDER_LINE.match(line))]
    assert senders == ["carol"] * (len(HOSTILE) + 1), "\n".join(lines)
