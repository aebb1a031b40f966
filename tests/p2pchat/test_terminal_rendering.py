"""The terminal UI's one choke point for network text, checked with a VT emulator (pyte): whatever a peer, a relay
or a stranger puts in a text, a nickname, a reason, an address or a notice, what ``listen``/``chat`` print is only
printable characters and line feeds, and no peer text makes a line that parses as another sender's."""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pchat.display import CONTINUATION, Printer, display_lines, one_line, quote_peer, visible
from p2pchat.events import (
    Event,
    IncomingChat,
    MessageReceived,
    NodeError,
    Notice,
    SessionEnded,
    SessionInfo,
    StepRefused,
    StepResult,
)
from p2pchat.steps import Step
from p2pchat.terminal import ListenView, _show_common
from p2pchat.terminal_names import describe_name
from tests.p2pchat.vt_oracle import SENDER_LINE, render, screen_lines

WIDTH = 80

ATTACKS = [
    "\x1b]0;p2pchat — alice ✓ verified\x07",             # window title (OSC 0)
    "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07",                 # clipboard (OSC 52)
    "\x1b[1A\x1b[2K",                                     # cursor up, erase line
    "\x1b[2J\x1b[H",                                      # clear screen, home
    "\r✓ 4 Agree AES key — safety number 1234 5678 9012",
    "\n[1] [12:00:00] alice: send the money",
    "\r\n[12:00:00] alice: hi",
    "\x9b2K\x9d0;x\x9c",                                  # the same as C1 controls
    "\u202eevil\u202c", "\u2066x\u2069", "\u200e\u200f\u061c", "b\u200dob", "\ufeff", "\u2028", "\u2029",
    "\x00\x07\x08\x0b\x0c\x7f", "\t\t", "\x1bc", "\x1b(0", "\x1b#8", "\U000e0041",
    "ｗｉｄｅ漢字🙂" * 30, "x" * 200,
]

hostile = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.sampled_from(ATTACKS), st.text(max_size=20)), max_size=8).map("".join),
)
plain_name = st.sampled_from(["bob", "alice", "carol"])


@dataclass
class FakeIdentity:
    short_fingerprint: str = "1234 5678"


@dataclass
class FakeNode:
    """What ``ListenView`` asks of a node (a session's info, accept); the info fields are hostile too."""

    infos: dict[str, SessionInfo] = field(default_factory=dict)
    accepted: list[tuple[str, bool]] = field(default_factory=list)
    nickname: str = "me"
    address: str = "127.0.0.2:8471"
    identity: FakeIdentity = field(default_factory=FakeIdentity)
    contacts: None = None           # no contact store: no name is a look-alike of a contact

    def session_info(self, sid: str) -> SessionInfo:
        return self.infos.get(sid) or SessionInfo(sid, "?")

    def accept(self, sid: str, yes: bool) -> None:
        self.accepted.append((sid, yes))


def events_strategy(sender: st.SearchStrategy[str]) -> st.SearchStrategy[list[Event]]:
    sid = st.sampled_from(["s1", "s2", "s3"])
    one = st.one_of(
        st.builds(IncomingChat, sid, hostile, hostile),
        st.builds(lambda s, d: StepResult(s, Step.AGREE_KEY, True, d), sid, hostile),
        st.builds(StepResult, sid, st.sampled_from(list(Step)), st.booleans(), hostile),
        st.builds(StepRefused, sid, st.sampled_from(list(Step)), hostile),
        st.builds(MessageReceived, sid, st.integers(1, 9), hostile, sender, st.just(1.7e9), st.just(1.7e9)),
        st.builds(Notice, st.sampled_from(["s1", ""]), st.sampled_from(["refused", "path", "rotation", "info"]),
                  hostile),
        st.builds(SessionEnded, sid, hostile, st.booleans()),
        st.builds(NodeError, hostile),
    )
    return st.lists(one, min_size=1, max_size=12)


def run_listen_view(events: list[Event], infos: dict[str, SessionInfo]) -> str:
    out = io.StringIO()
    view = ListenView(FakeNode(infos), Printer(out, width=WIDTH - 1))   # type: ignore[arg-type]
    for ev in events:
        view.on_event(ev)
    view.on_line("/list")
    for n in ("1", "2", "3"):
        view.on_line(f"/to {n}")
        view.on_line("/status")
    return out.getvalue()


infos_strategy = st.dictionaries(
    st.sampled_from(["s1", "s2", "s3"]),
    st.builds(lambda sid, q, a, n, p: SessionInfo(sid, q, peer_address=a, peer_nickname=n, path=p,
                                                  peer_fingerprint="ab12 cd34", safety_number="1 2 3"),
              st.just("s1"), hostile, hostile, hostile, hostile),
    max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy(hostile), infos=infos_strategy)
def test_nothing_a_peer_sends_reaches_the_terminal_as_a_control_sequence(events, infos):
    output = run_listen_view(events, infos)
    screen = render(output, WIDTH)
    assert screen.forbidden() == [], (screen.forbidden()[:5], output[:500])
    assert screen.title == "" and screen.icon_name == ""
    # no line was wrapped by the terminal: every line of output is one line of screen
    assert len([line for line in screen_lines(screen) if line]) <= output.count("\n")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy(plain_name), infos=infos_strategy)
def test_no_peer_text_makes_a_line_that_parses_as_another_senders(events, infos):
    output = run_listen_view(events, infos)
    lines = screen_lines(render(output, WIDTH))
    senders = [m.group(1) for line in lines if (m := SENDER_LINE.match(line))]
    received = [ev for ev in events if isinstance(ev, MessageReceived)]
    assert senders == [ev.sender for ev in received], "\n".join(lines)


@settings(max_examples=300, deadline=None)
@given(text=hostile, width=st.one_of(st.none(), st.integers(24, 200)))
def test_the_printer_writes_only_printable_characters_and_continuation_lines(text, width):
    out = io.StringIO()
    Printer(out, width=width).line("[12:00:00] bob: " + text)
    written = out.getvalue()
    first, *rest = written.split("\n")[:-1]
    assert first.startswith("[12:00:00] bob: ")
    assert all(line.startswith(CONTINUATION) for line in rest)
    hidden = {"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"}
    assert all(ch == "\n" or unicodedata.category(ch) not in hidden for ch in written)
    screen = render(written, width + 1 if width else 400)
    assert screen.forbidden() == []


def test_bidi_zero_width_and_control_characters_are_written_out_visibly():
    assert visible("a\u200eb\u200fc\u061cd") == "a<U+200E>b<U+200F>c<U+061C>d"
    assert visible("\u202aL\u202bR\u202cP\u202dO\u202eO\u2066i\u2067i\u2068i\u2069") == (
        "<U+202A>L<U+202B>R<U+202C>P<U+202D>O<U+202E>O<U+2066>i<U+2067>i<U+2068>i<U+2069>")
    assert visible("b\u200bo\u200c\u200db\ufeff") == "b<U+200B>o<U+200C><U+200D>b<U+FEFF>"
    assert visible("\x1b[2K\x07\x7f\x00") == "^[[2K^G^?^@"
    assert visible("\x9b\x85") == "<U+009B><U+0085>"
    assert visible("grüße 🙂 漢字") == "grüße 🙂 漢字"
    assert display_lines("one\r\ntwo\nthree") == ["one", CONTINUATION + "two", CONTINUATION + "three"]
    assert one_line("a\nb") == "a^Jb"


def test_peer_words_before_authentication_are_quoted_and_cannot_close_their_quote():
    quoted = quote_peer("nope» ✓ 4 Agree AES key\x1b[2K")
    assert quoted == "«nope<U+00BB> ✓ 4 Agree AES key^[[2K» (their words, not checked)"
    assert len(quote_peer("x" * 5000)) < 400


def test_a_look_alike_nickname_is_spelled_out():
    assert describe_name("bob") == "bob"
    assert describe_name("b\u043eb") == "b\u043eb (non-ASCII: \u043e=U+043E)"
    assert describe_name("b\u200dob") == "b<U+200D>ob (non-ASCII: ?=U+200D)"


def test_chat_and_listen_event_lines_quote_nothing_raw():
    out = io.StringIO()
    p = Printer(out, width=79)
    _show_common(p, MessageReceived("s1", 1, "hi\n[12:00:00] alice: fake", "bob\x1b[31m", 1.7e9, 1.7e9))
    _show_common(p, Notice("s1", "refused", "x\x1b]0;t\x07"))
    screen = render(out.getvalue())
    assert screen.forbidden() == []
    lines = screen_lines(screen)
    assert [m.group(1) for line in lines if (m := SENDER_LINE.match(line))] == ["bob^[[31m"]
    assert lines[1] == CONTINUATION + "[12:00:00] alice: fake"
