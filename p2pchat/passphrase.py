"""Where the terminal commands get the data directory's passphrase: ``--passphrase-file``, ``$P2PCHAT_PASSPHRASE``,
or (on a terminal) a question. One passphrase protects the identity key, the history and the contact store.

On a terminal, the first run of a data directory (no passphrase record yet, no protected key) offers to set one;
a directory that has one asks for it instead of failing.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO

from p2pchat.foundation.datadir import resolve_data_dir
from p2pchat.foundation.errors import UserError

# The identity key's and the vault's modules (and pycryptodome's, logging, json with them) are imported when a
# data directory is opened, not when a command line that only shows help is built (bench/startup_bench.py).
if TYPE_CHECKING:
    from p2pchat.vault import Vault

ENV = "P2PCHAT_PASSPHRASE"
MIN_LENGTH = 8


def add_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", help="file whose first line is the passphrase of the data directory (it "
                                             f"protects the identity key, history and contacts; or set {ENV})")


def given(args: argparse.Namespace) -> str | None:
    """The passphrase from ``--passphrase-file`` or ``$P2PCHAT_PASSPHRASE`` (``None``: neither)."""
    path = getattr(args, "passphrase_file", None)
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise UserError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    return os.environ.get(ENV) or None


def _protected(data_dir: Path) -> bool:
    """Whether the directory already has a passphrase (its record, or a protected identity key)."""
    from p2pchat.foundation.identity import KEY_FILE
    from p2pchat.vault import FILE_NAME

    try:
        if b"scrypt" in (data_dir / FILE_NAME).read_bytes():
            return True
    except OSError:
        pass
    try:
        return b"ENCRYPTED" in (data_dir / KEY_FILE).read_bytes()
    except OSError:
        return False


def _interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def obtain(data_dir: Path, args: argparse.Namespace, *, offer: bool = True, err: TextIO | None = None) -> str | None:
    """The passphrase to use for ``data_dir``: given, else asked for on a terminal (the existing one, or on the
    first run an optional new one); ``None`` for no passphrase."""
    passphrase = given(args)
    if passphrase is not None or not _interactive():
        return passphrase
    from p2pchat.vault import Vault

    out = err or sys.stderr
    if _protected(data_dir):
        return getpass.getpass(f"Passphrase for {data_dir}: ", stream=out) or None
    if not offer or Vault.asked(data_dir):
        return None
    out.write("A passphrase encrypts your chat history, contacts and identity key on this computer; without one\n"
              "they are protected only by the file permissions (anyone with your login or your disk can read "
              "them).\n")
    out.flush()
    while True:
        first = getpass.getpass("New passphrase (Enter for none): ", stream=out)
        if not first:
            Vault.remember_no_passphrase(data_dir)
            return None
        if len(first) < MIN_LENGTH:
            out.write(f"Use at least {MIN_LENGTH} characters.\n")
            continue
        if getpass.getpass("The same passphrase again: ", stream=out) == first:
            out.write(f"Remember it: without it nothing in {data_dir} can be read. Give it later with "
                      f"--passphrase-file FILE or {ENV}.\n")
            return first
        out.write("The two did not match; try again.\n")


class Opened(NamedTuple):
    data_dir: Path
    passphrase: str | None
    vault: Vault


def open_data_dir(args: argparse.Namespace, *, offer: bool = True) -> Opened:
    """``--data-dir`` (or the default) with its passphrase (:func:`obtain`) and its vault. A passphrase that does
    not open the directory's record, or its protected identity key, is refused (:mod:`p2pchat.vault`)."""
    from p2pchat.vault import Vault

    data_dir = resolve_data_dir(getattr(args, "data_dir", None))
    secret = obtain(data_dir, args, offer=offer)
    return Opened(data_dir, secret, Vault.open(data_dir, secret))


__all__ = ["ENV", "Opened", "add_option", "given", "obtain", "open_data_dir"]
