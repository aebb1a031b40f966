"""While the app runs, Python's cyclic garbage collector runs on the Tk thread only.

tkinter objects (fonts, variables, images) delete their Tcl side in ``__del__``. In a reference cycle (widgets and
the callbacks that name them make many) only the cyclic collector frees them, and the interpreter runs it in
whichever thread allocates when a threshold is passed: a chat node's reader, a pool worker, the ledger monitor.
From another thread every Tcl call is handed to the Tk thread and waits for it under ``mainloop``, or waits one
second and fails when the loop is driven by ``update()`` — for each object. A reader that holds its session's lock
then stalls the chat for seconds, and the Tk thread, which takes that lock to collect the next message, stalls
with it (under ``mainloop`` neither ever wakes).

So :class:`TkThreadCollector` turns automatic collection off and runs it from an ``after()`` tick on the Tk thread,
generation by generation as the interpreter would (:func:`due_generation`); closing it collects once more, on the
Tk thread, and gives automatic collection back.
"""

from __future__ import annotations

import gc
import tkinter

GC_TICK_MS = 100      # how often the Tk thread looks at the collector's counts


def due_generation(counts: tuple[int, int, int], thresholds: tuple[int, ...]) -> int | None:
    """The generation the interpreter would collect now (the oldest whose count passed its threshold, once the
    youngest's has), or None when none is due. CPython also skips a full collection while few objects were
    promoted since the last one (it cannot be read from Python): here the oldest generation is collected a little
    more often, which only matters for heaps far larger than a chat window's."""
    if not thresholds or thresholds[0] <= 0 or counts[0] <= thresholds[0]:
        return None
    due = 0
    for generation in (1, 2):
        if generation < len(thresholds) and counts[generation] > thresholds[generation]:
            due = generation
    return due


class TkThreadCollector:
    """Owns the cyclic collector while a Tk root lives: ticks on ``root``'s thread; :meth:`close` hands it back."""

    def __init__(self, root: tkinter.Misc, tick_ms: int = GC_TICK_MS) -> None:
        self._root = root
        self._tick_ms = tick_ms
        self._was_enabled = gc.isenabled()
        self._after_id: str | None = None
        self._closed = False
        self.collections = 0           # collections run by the ticks (tests read it)
        gc.disable()
        self._schedule()

    def _schedule(self) -> None:
        self._after_id = self._root.after(self._tick_ms, self._tick)

    def _tick(self) -> None:
        self._after_id = None
        if self._closed:
            return
        self.collect_due()
        self._schedule()

    def collect_due(self) -> int | None:
        """Run the collection that is due (see :func:`due_generation`); its generation, or None."""
        generation = due_generation(gc.get_count(), gc.get_threshold())
        if generation is not None:
            gc.collect(generation)
            self.collections += 1
        return generation

    def close(self) -> None:
        """Stop ticking, collect what the closed windows left (here, on the Tk thread), give collection back."""
        if self._closed:
            return
        self._closed = True
        if self._after_id is not None:
            try:
                self._root.after_cancel(self._after_id)
            except tkinter.TclError:      # the root is gone already: its timers went with it
                pass
            self._after_id = None
        gc.collect()
        if self._was_enabled:
            gc.enable()
