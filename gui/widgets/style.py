"""Colours and fonts shared by the widgets: (light, dark) pairs so that the system's mode is followed."""

from __future__ import annotations

import tkinter.font

import customtkinter as ctk

from gui.models import StepState

Color = tuple[str, str]

GOOD: Color = ("#2e7d32", "#66bb6a")
BAD: Color = ("#c62828", "#ef5350")
MUTED: Color = ("gray40", "gray65")
TEXT: Color = ("gray10", "gray90")
WARN: Color = ("#a15c00", "#ffb74d")
ACCENT: Color = ("#1f6aa5", "#3b8ed0")

# Step buttons: the next step wears the accent colour, later ones a quiet grey (still pressable), done ones
# green, a failed one red (press it again to retry).
STEP_NEXT = {"fg_color": ("#1f6aa5", "#1f6aa5"), "hover_color": ("#144870", "#144870"),
             "text_color": ("white", "white")}
STEP_LATER = {"fg_color": ("gray82", "gray28"), "hover_color": ("gray72", "gray35"),
              "text_color": ("gray25", "gray80")}
STEP_DONE = {"fg_color": ("#2e7d32", "#2e7d32"), "hover_color": ("#2e7d32", "#2e7d32"),
             "text_color": ("white", "white")}
STEP_FAILED = {"fg_color": ("#c62828", "#b71c1c"), "hover_color": ("#8e0000", "#8e0000"),
               "text_color": ("white", "white")}
STEP_RUNNING = {"fg_color": ("#5c8fbf", "#2b5f8a"), "hover_color": ("#5c8fbf", "#2b5f8a"),
                "text_color": ("white", "white")}


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
