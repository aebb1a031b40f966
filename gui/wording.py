"""Plain sentences for the technical reasons the chat node gives: what the window shows where the user looks,
with the node's own text kept as the detail one click away.

The node's reasons are written for a terminal user and a log ("--relay is not set", "'hello' message: field
'role' is missing", "no live binding for ip …"); the window maps the known ones to a sentence without flags or
internals. An unknown reason is shown as it is (cleaned by the caller): hiding it would hide the only clue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Wording:
    plain: str                 # one sentence for a person
    detail: str | None = None  # the node's own text, when it says more than ``plain``


# (pattern in the node's reason, plain sentence); the first match wins, most specific first.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.IGNORECASE), s) for p, s in (
    (r"you declined|you rejected",
     "You said no to the chat with {peer}."),
    (r"declined the chat|rejected the chat",
     "{peer} said no to the chat."),
    (r"you did not accept or reject the chat(?: within ([\d.]+ s))?",
     "The chat request expired: you did not answer it {within_or_in_time}."),
    (r"did not accept or reject the chat(?: within ([\d.]+ s))?",
     "{peer} did not answer your chat request {within_or_in_time}."),
    (r"no ledger record|no live binding|has no record of its key",
     "{peer} is not in the ledger yet: they may not have joined the network, or their record is still being "
     "mined. Try again in a minute."),
    (r"nothing answered|connection refused|direct connection failed",
     "{peer} could not be reached: is p2pchat running on their computer, and is the address right?"),
    # the node names the address ("127.0.0.5:8471 closed the connection"); the user knows the peer by its name
    (r"closed the connection|connection was lost|connection reset|broken pipe",
     "The connection to {peer} was closed: their program stopped, or the network between you dropped."),
    (r"relay is not set|no relay is known|cannot use relays",
     "{peer} could not be reached directly, and there is no relay server to try instead."),
    (r"message: field|is missing|unexpected message|bad frame|not a valid|malformed",
     "{peer}'s program sent something this version does not understand (perhaps a different version)."),
    (r"version|network mismatch|different network",
     "{peer} uses a different version or network of p2pchat."),
    (r"signature|does not match the ledger|key does not match|fingerprint mismatch",
     "{peer}'s key does not match the ledger: this may not be who you think. Do not continue."),
    (r"went silent|no answer within|timed out|timeout",
     "{peer} stopped answering."),
))


def plain(reason: str, peer: str = "The other side") -> Wording:
    """The sentence the window shows for a node's ``reason`` about ``peer``; the reason itself as the detail."""
    reason = reason.strip()
    for pattern, sentence in _RULES:
        m = pattern.search(reason)
        if m:
            within = m.group(1) if m.groups() else None
            text = sentence.format(peer=peer, within=f" (within {within})" if within else "",
                                   within_or_in_time=f"within {within}" if within else "in time")
            if not sentence.startswith("{peer}"):      # a nickname keeps its own case
                text = text[0].upper() + text[1:]
            return Wording(text, reason if reason != text else None)
    if not reason:
        return Wording("Something went wrong.")
    return Wording(reason[0].upper() + reason[1:])


def countdown(seconds: float) -> str:
    """``1:45`` or ``45 s`` left."""
    s = max(0, int(seconds + 0.999))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s} s"
