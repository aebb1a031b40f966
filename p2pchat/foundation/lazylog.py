"""A logger that imports :mod:`logging` on its first message: modules on a command's start-up path (the frame
transport, the ledger command line) log through it, so ``ledger lookup`` answered by the local node and
``--help`` never import logging (bench/startup_bench.py, tests/test_startup_imports.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging


class LazyLogger:
    """A named logger whose :mod:`logging` import waits for the first message."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    @property
    def logger(self) -> logging.Logger:
        if self._logger is None:
            import logging

            self._logger = logging.getLogger(self.name)
        return self._logger

    def debug(self, msg: str, *args: object) -> None:
        self.logger.debug(msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.logger.info(msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.logger.warning(msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.logger.error(msg, *args)
