"""Tk objects that only the cyclic garbage collector can free are freed on the Tk thread, never in a node thread
(gui/tk_gc.py).

The race this guards: a chat node's reader allocates, the interpreter runs the collector right there, and the
garbage holds a tkinter font or variable (a closed dialog's widgets sit in reference cycles). Its ``__del__`` calls
Tcl from the reader, which then waits for the Tk thread (a second per object while the loop is driven with
``update()``, for ever under ``mainloop`` if the Tk thread waits for the lock the reader holds). A burst of
messages stalled for 20 s that way under load.
"""

from __future__ import annotations

import gc
import threading
import tkinter
from typing import ClassVar

import pytest

from gui.app import App
from gui.tk_gc import TkThreadCollector, due_generation
from tests.gui.driver import Driver

pytestmark = pytest.mark.gui


class RecordedVar(tkinter.StringVar):
    """A Tk variable that notes the thread its ``__del__`` (a Tcl call) runs in."""

    freed_in: ClassVar[list[str]] = []

    def __del__(self) -> None:
        RecordedVar.freed_in.append(threading.current_thread().name)
        super().__del__()


class Cycle:
    """Garbage only the cyclic collector frees, as a widget and the callback naming it are."""

    def __init__(self, master: tkinter.Misc) -> None:
        self.me = self
        self.var = RecordedVar(master, "x")


def allocate_in_a_node_thread() -> None:
    """What a chat node's reader does all the time: allocate container objects (many collector thresholds' worth)."""
    def work() -> None:
        kept = [[n] for n in range(50_000)]
        del kept

    thread = threading.Thread(target=work, name="chat-reader-like")
    thread.start()
    thread.join(60)
    assert not thread.is_alive()


def test_tk_objects_in_garbage_cycles_are_freed_on_the_tk_thread_while_node_threads_allocate(xvfb):
    RecordedVar.freed_in = []
    app = App(appearance="Light")
    try:
        gc.collect()            # the youngest generation is empty: the cycles below are in it
        for _ in range(3):
            Cycle(app.root)
        allocate_in_a_node_thread()
        assert RecordedVar.freed_in == [], "the collector ran in a node thread and called Tcl from there"
    finally:
        app.close()             # collects once more, on this (the Tk) thread
    assert RecordedVar.freed_in == ["MainThread"] * 3
    assert gc.isenabled()


def test_the_collector_runs_from_the_tk_loop_once_a_threshold_is_passed(xvfb):
    root = tkinter.Tk()
    collector = TkThreadCollector(root, tick_ms=10)
    try:
        assert not gc.isenabled()
        kept = [[n] for n in range(5 * gc.get_threshold()[0])]     # past the youngest generation's threshold
        Driver(root).wait(lambda: collector.collections > 0, what="a collection from the Tk loop")
        del kept
    finally:
        collector.close()
        collector.close()        # closing twice is harmless
        root.destroy()
    assert gc.isenabled()


@pytest.mark.parametrize(("counts", "due"), [
    ((700, 0, 0), None),          # at the threshold, not past it
    ((701, 0, 0), 0),
    ((701, 11, 0), 1),
    ((701, 11, 11), 2),
    ((701, 3, 11), 2),            # the oldest generation past its threshold, as the interpreter picks
    ((0, 50, 50), None),          # nothing is due until the youngest generation's count passes its threshold
])
def test_due_generation_follows_the_interpreters_thresholds(counts, due):
    assert due_generation(counts, (700, 10, 10)) == due


def test_no_generation_is_due_when_collection_is_switched_off_by_a_zero_threshold():
    assert due_generation((10_000, 50, 50), (0, 10, 10)) is None
