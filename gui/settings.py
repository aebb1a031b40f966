"""Window settings remembered per data directory: size, position, scaling and appearance (``gui.json``).

The file is small JSON written atomically (temporary file, fsync, rename), so a crash never leaves half a file;
a missing, unreadable or hand-mangled file falls back to the defaults value by value.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from p2pchat.foundation.datadir import replace_file

log = logging.getLogger(__name__)

FILE_NAME = "gui.json"
SCALINGS = (0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0)
APPEARANCES = ("System", "Light", "Dark")
MIN_WIDTH, MIN_HEIGHT = 560, 520
MAX_SIDE = 10_000
# Tk answers ``wm geometry`` with ``WxH+X+Y``; X or Y is written ``+-5`` when the window sits off screen.
_GEOMETRY = re.compile(r"(\d{1,5})x(\d{1,5})(?:\+(-?\d{1,5})\+(-?\d{1,5}))?")


@dataclass(frozen=True)
class Settings:
    width: int = 1000
    height: int = 720
    x: int | None = None           # window position; None lets the window manager place it
    y: int | None = None
    scaling: float = 1.0
    appearance: str = "System"     # follow the system's light/dark mode unless the user picks one

    @property
    def geometry(self) -> str:
        """A Tk geometry string: ``1000x720`` or ``1000x720+40+30``."""
        size = f"{self.width}x{self.height}"
        return size if self.x is None or self.y is None else f"{size}+{self.x}+{self.y}"

    def with_geometry(self, geometry: str) -> Settings:
        """These settings with size and position taken from Tk's ``wm geometry`` answer (bad text is ignored)."""
        m = _GEOMETRY.fullmatch(geometry.strip())
        if not m:
            return self
        width, height = _side(int(m.group(1)), MIN_WIDTH), _side(int(m.group(2)), MIN_HEIGHT)
        x = _side(int(m.group(3)), -MAX_SIDE) if m.group(3) else self.x
        y = _side(int(m.group(4)), -MAX_SIDE) if m.group(4) else self.y
        return Settings(width, height, x, y, self.scaling, self.appearance)


def _side(value: int, minimum: int) -> int:
    return max(minimum, min(MAX_SIDE, value))


def _from_json(data: object) -> Settings:
    default = Settings()
    if not isinstance(data, dict):
        return default

    def whole(name: str, lo: int, hi: int) -> int | None:
        value = data.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi else None

    scaling = data.get("scaling")
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float)) or scaling not in SCALINGS:
        scaling = default.scaling     # (True == 1 and 1 == 1.0 in Python: bools and ints are checked first)
    appearance = data.get("appearance")
    return Settings(
        width=whole("width", MIN_WIDTH, MAX_SIDE) or default.width,
        height=whole("height", MIN_HEIGHT, MAX_SIDE) or default.height,
        x=whole("x", -MAX_SIDE, MAX_SIDE),
        y=whole("y", -MAX_SIDE, MAX_SIDE),
        scaling=float(scaling),
        appearance=appearance if appearance in APPEARANCES else default.appearance,
    )


def load(data_dir: Path) -> Settings:
    """The remembered settings of this data directory, or the defaults."""
    path = data_dir / FILE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:   # deep nesting: RecursionError
        log.warning("ignoring unreadable window settings in %s: %s", path, type(exc).__name__)
        return Settings()
    return _from_json(data)


def save(data_dir: Path, settings: Settings) -> None:
    """Write the settings atomically: readers see the old file or the new one, never a mix."""
    _write_atomically(data_dir / FILE_NAME, json.dumps(asdict(settings), indent=2, sort_keys=True) + "\n")


# ---- alerts ---------------------------------------------------------------------------------------------------

ALERTS_FILE = "alerts.json"


@dataclass(frozen=True)
class Alerts:
    """How the window gets attention for a caller or a message while it is minimized or unfocused.

    Kept in a file of their own (``alerts.json``) so that saving the window's geometry never resets them."""

    notify: bool = True         # a desktop notification (freedesktop, over D-Bus) where there is a server
    urgent: bool = True         # the window's urgency hint (the taskbar entry flashes)
    raise_window: bool = True   # an incoming chat raises and focuses the window with its accept dialog
    sound: bool = False         # the terminal bell, off by default: a classroom is not a place for beeps


def load_alerts(data_dir: Path) -> Alerts:
    path = data_dir / ALERTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Alerts()
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        log.warning("ignoring unreadable alert settings in %s: %s", path, type(exc).__name__)
        return Alerts()
    if not isinstance(data, dict):
        return Alerts()
    default = asdict(Alerts())
    return Alerts(**{k: data[k] if isinstance(data.get(k), bool) else v for k, v in default.items()})


def save_alerts(data_dir: Path, alerts: Alerts) -> None:
    _write_atomically(data_dir / ALERTS_FILE, json.dumps(asdict(alerts), indent=2, sort_keys=True) + "\n")


def _write_atomically(path: Path, payload: str) -> None:
    """Temporary file, fsync, rename (foundation ``datadir.replace_file``); a write the disk cannot take raises
    OSError and leaves the old file and no temporary copy."""
    replace_file(path, payload.encode("utf-8"), OSError)
