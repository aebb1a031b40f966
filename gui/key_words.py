"""The node's key-change warning (p2pchat/continuity.py), worded for the window: the terminal's last line names
command-line flags; the window has buttons instead (issue 15: no flag names in the window)."""

from __future__ import annotations

from p2pchat.flags import ACCEPT_FLAG


def window_warning(reason: str, peer: str, verified: bool) -> str:
    """``reason`` without its command-line advice, ending with what to do in the window."""
    lines = [line for line in reason.splitlines() if ACCEPT_FLAG not in line]
    if verified:
        lines.append(f"Because you verified {peer}, this is a hard stop. Ask {peer} in person or by phone whether "
                     "their key changed; only then tick the box below and accept the new key, and compare the new "
                     "safety number once connected.")
    else:
        lines.append(f"What to do: ask {peer} through another channel (in person, by phone) whether their key "
                     "changed. If it did, accept the new key and compare the safety number once connected.")
    return "\n".join(lines)


def step_2_words(peer: str) -> str:
    """Step 2's result beside its button when the key changed (the full warning is in the dialog)."""
    return (f"the ledger names another key for {peer} than the one you chatted with before; nothing was signed or "
            "sent")
