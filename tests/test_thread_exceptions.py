"""The suite's own guard: an exception that escapes a thread fails the test it happened in (tests/conftest.py)."""

from __future__ import annotations

import threading

from tests.conftest import take_thread_errors


def test_an_exception_escaping_a_thread_is_recorded_for_the_running_test():
    def boom() -> None:
        raise ValueError("a programming error in a thread")

    thread = threading.Thread(target=boom, name="test-boom")
    thread.start()
    thread.join()
    errors = take_thread_errors()          # taken here, so this test itself passes
    assert len(errors) == 1 and "test-boom" in errors[0] and "ValueError" in errors[0]
