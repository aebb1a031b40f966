"""Colours and fonts shared by the widgets: (light, dark) pairs so that the system's mode is followed."""

from __future__ import annotations

import tkinter.font

import customtkinter as ctk

from gui.models import StepState

Color = tuple[str, str]

# Text colours meet WCAG AA (contrast of at least 4.5:1) on every background below, in both modes
# (tests/gui/test_gui_contrast.py computes each pair).
GOOD: Color = ("#1b5e20", "#66bb6a")
BAD: Color = ("#b71c1c", "#ff7b72")
MUTED: Color = ("gray30", "gray70")
TEXT: Color = ("gray10", "gray90")
WARN: Color = ("#8a4b00", "#ffb74d")
ACCENT: Color = ("#1a5a8c", "#64a8dc")
WAITING: Color = ("#6a1b9a", "#ce93d8")   # a text kept for a contact who is away (issue 16): not grey, not an error

# Group members' names in a group conversation (issue 18): eight hues, each readable (4.5:1) on the transcript in
# both modes; a member keeps its colour (gui/groups.py). Own messages keep GOOD on the own-message band.
MEMBER_COLORS: tuple[Color, ...] = (
    ("#1a5a8c", "#64a8dc"),     # blue
    ("#8a4b00", "#ffb74d"),     # orange
    ("#6a1b9a", "#ce93d8"),     # purple
    ("#00695c", "#4db6ac"),     # teal
    ("#ad1457", "#f48fb1"),     # pink
    ("#4a5d00", "#c0ca33"),     # olive
    ("#6d4c41", "#bcaaa4"),     # brown
    ("#283593", "#9fa8da"),     # indigo
)

# The backgrounds text is drawn on: the window, frames (step bar, tabs), text boxes, the peer panel, and the band
# behind one's own messages in the transcript.
WINDOW_BG: Color = ("gray92", "gray14")
FRAME_BG: Color = ("gray86", "gray17")
TEXTBOX_BG: Color = ("#F9F9FA", "#1D1E1E")
PANEL_BG: Color = ("gray92", "gray17")
OWN_BACKGROUND: Color = ("#e3edf7", "#1c2a38")
BACKGROUNDS: dict[str, Color] = {"window": WINDOW_BG, "frame": FRAME_BG, "textbox": TEXTBOX_BG, "panel": PANEL_BG,
                                 "own message": OWN_BACKGROUND}
TEXT_COLORS: dict[str, Color] = {"good": GOOD, "bad": BAD, "muted": MUTED, "text": TEXT, "warn": WARN,
                                 "accent": ACCENT, "waiting": WAITING,
                                 **{f"member {i}": c for i, c in enumerate(MEMBER_COLORS)}}
NEUTRAL_TEXT: Color = ("gray10", "gray90")       # outlined buttons (Reject, Cancel, End chat)
FOCUS_RING: Color = ("#e8a200", "#ffd54f")       # the border of the button that has the keyboard focus

# Step buttons: the next step wears the accent colour, later ones a quiet grey (still pressable), done ones
# green, a failed one red (press it again to retry).
STEP_NEXT = {"fg_color": ("#1f6aa5", "#1f6aa5"), "hover_color": ("#144870", "#144870"),
             "text_color": ("white", "white")}
STEP_LATER = {"fg_color": ("gray82", "gray28"), "hover_color": ("gray72", "gray35"),
              "text_color": ("gray20", "gray85")}
STEP_DONE = {"fg_color": ("#2e7d32", "#2e7d32"), "hover_color": ("#2e7d32", "#2e7d32"),
             "text_color": ("white", "white")}
STEP_FAILED = {"fg_color": ("#c62828", "#b71c1c"), "hover_color": ("#8e0000", "#8e0000"),
               "text_color": ("white", "white")}
STEP_RUNNING = {"fg_color": ("#2f6690", "#2b5f8a"), "hover_color": ("#2f6690", "#2b5f8a"),
                "text_color": ("white", "white")}
# Rows of the conversation list: the chosen one in the accent colour, the others on a quiet grey.
ROW_SELECTED = {"fg_color": ("#1f6aa5", "#1f6aa5"), "hover_color": ("#144870", "#144870"),
                "text_color": ("white", "white")}
ROW_PLAIN = {"fg_color": ("gray82", "gray25"), "hover_color": ("gray72", "gray32"),
             "text_color": ("gray10", "gray90")}
ROW_STYLES = {"selected row": ROW_SELECTED, "row": ROW_PLAIN}
STEP_STYLES = {"next": STEP_NEXT, "later": STEP_LATER, "done": STEP_DONE, "failed": STEP_FAILED,
               "running": STEP_RUNNING}


def step_style(state: StepState, turn: bool) -> dict[str, Color]:
    if state is StepState.DONE:
        return STEP_DONE
    if state is StepState.RUNNING:
        return STEP_RUNNING
    if state is StepState.FAILED:
        return STEP_FAILED
    return STEP_NEXT if turn else STEP_LATER


def result_color(text: str) -> Color:
    if text.startswith("✓"):
        return GOOD
    if text.startswith("✗"):
        return BAD
    return MUTED


def mono_family() -> str:
    """The family behind Tk's fixed-width font (DejaVu Sans Mono on most Linux desktops)."""
    return str(tkinter.font.nametofont("TkFixedFont").actual("family"))


class Fonts:
    """Fonts created once per window (they need a Tk root)."""

    def __init__(self) -> None:
        self.body = ctk.CTkFont(size=13)
        self.small = ctk.CTkFont(size=12)
        self.bold = ctk.CTkFont(size=13, weight="bold")
        self.title = ctk.CTkFont(size=16, weight="bold")
        self.italic = ctk.CTkFont(size=12, slant="italic")
        self.mono = ctk.CTkFont(family=mono_family(), size=12)


class LabelText:
    """Sets a label's text and colour only when they change: the values are remembered here (reading them back
    with ``cget`` is a Tk call) and a colour change redraws the whole customtkinter label, a text change does not."""

    def __init__(self, label: ctk.CTkLabel) -> None:
        self.label = label
        self.text: str | None = None
        self.color: Color | str | None = None

    def show(self, text: str, color: Color | str | None = None) -> None:
        changes: dict[str, object] = {}
        if text != self.text:
            self.text = changes["text"] = text
        if color is not None and color != self.color:
            self.color = changes["text_color"] = color
        if changes:
            self.label.configure(**changes)
