"""Hiding and showing gridded customtkinter widgets so that a scaling change does not bring them back.

customtkinter remembers each widget's last ``grid`` call and repeats it, scaled, whenever the widget scaling
changes; ``grid_remove`` does not clear that memory, so a hidden widget (a folded step, an empty row) reappears
after any scaling change. :func:`hide` forgets the placement in customtkinter too and keeps it here;
:func:`show` places the widget again with the same arguments.
"""

from __future__ import annotations

from typing import Any

_placements: dict[str, dict[str, Any]] = {}
_removed: set[str] = set()        # plain Tk widgets hidden with grid_remove (Tk keeps their placement)


def hide(widget: Any) -> None:
    last = getattr(widget, "_last_geometry_manager_call", None)    # customtkinter's memory (see above)
    if last is not None:
        _placements[str(widget)] = dict(last["kwargs"])
        widget.grid_forget()        # type: ignore[union-attr]  # customtkinter's grid_forget clears its memory
    elif widget.winfo_manager() == "grid":
        _removed.add(str(widget))
        widget.grid_remove()        # type: ignore[union-attr]


def show(widget: Any) -> bool:
    """Place a widget hidden with :func:`hide` again; False when it was never hidden (place it yourself)."""
    kwargs = _placements.pop(str(widget), None)
    if kwargs is not None:
        widget.grid(**kwargs)       # type: ignore[attr-defined]
        return True
    if widget.winfo_manager():
        return True
    if str(widget) in _removed:
        _removed.discard(str(widget))
        widget.grid()               # type: ignore[attr-defined]
        return True
    return False
