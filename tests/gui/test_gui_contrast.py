"""WCAG AA contrast (at least 4.5:1 for text) of every text/background pair of gui/widgets/style.py, in the light
and the dark mode. Colour names are resolved the way X11 does (``grayN`` is N % of white)."""

from __future__ import annotations

import re

import pytest

from gui.widgets import style

AA = 4.5
NAMED = {"white": (255, 255, 255), "black": (0, 0, 0)}


def rgb(color: str) -> tuple[int, int, int]:
    color = color.lower()
    if color in NAMED:
        return NAMED[color]
    if m := re.fullmatch(r"gr[ae]y(\d{1,3})", color):
        v = int(int(m.group(1)) * 255 / 100 + 0.5)
        return v, v, v
    if m := re.fullmatch(r"#([0-9a-f]{6})", color):
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    raise ValueError(f"unknown colour {color!r}")


def luminance(color: str) -> float:
    def channel(c: int) -> float:
        x = c / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_the_contrast_formula_matches_known_values():
    assert contrast("white", "black") == pytest.approx(21.0)
    assert contrast("#777777", "white") == pytest.approx(4.48, abs=0.01)
    assert contrast("gray40", "gray86") < AA      # the old light-mode hint grey on a frame: 4.15:1 in issue 15


TEXT_PAIRS = [(f"{t} on {b} ({mode})", fg[i], bg[i])
              for t, fg in style.TEXT_COLORS.items() for b, bg in style.BACKGROUNDS.items()
              for i, mode in enumerate(("light", "dark"))]
BUTTON_PAIRS = [(f"{name} step button ({mode})", st["text_color"][i], st["fg_color"][i])
                for name, st in (style.STEP_STYLES | style.ROW_STYLES).items()
                for i, mode in enumerate(("light", "dark"))]
NEUTRAL_PAIRS = [(f"outlined button on {b} ({mode})", style.NEUTRAL_TEXT[i], bg[i])
                 for b, bg in style.BACKGROUNDS.items() for i, mode in enumerate(("light", "dark"))]


@pytest.mark.parametrize(("what", "fg", "bg"), TEXT_PAIRS + BUTTON_PAIRS + NEUTRAL_PAIRS,
                         ids=[p[0] for p in TEXT_PAIRS + BUTTON_PAIRS + NEUTRAL_PAIRS])
def test_every_text_colour_meets_wcag_aa_on_its_backgrounds(what, fg, bg):
    assert contrast(fg, bg) >= AA, f"{what}: {contrast(fg, bg):.2f}:1"
