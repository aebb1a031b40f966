"""This machine's identity: an RSA key kept in the data directory as PKCS#8 PEM, mode 0600.

The key is created on first use. The private half is never printed or logged: :class:`Identity`'s ``repr``
shows only the fingerprint.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from p2pchat.foundation import crypto
from p2pchat.foundation.datadir import exposure_problem, replace_file, slot_problem, write_new_file
from p2pchat.foundation.errors import IdentityError

if TYPE_CHECKING:
    from p2pchat.foundation.keygen import KeygenProgress

KEY_FILE = "identity.pem"
log = logging.getLogger(__name__)


class Identity:
    """An RSA identity key with its public DER and fingerprint."""

    def __init__(self, key: crypto.RsaKey) -> None:
        if not key.has_private():
            raise ValueError("an identity needs a private key")
        crypto.keep_keys_out_of_core_dumps()
        self._key = key
        self.public_der = crypto.public_der(key)
        self.fingerprint = crypto.fingerprint(self.public_der)

    @classmethod
    def generate(cls, bits: int = crypto.RSA_BITS) -> Identity:
        return cls(crypto.generate_rsa(bits))

    @property
    def short_fingerprint(self) -> str:
        return crypto.format_fingerprint(self.fingerprint)

    @property
    def public_key(self) -> crypto.RsaKey:
        return self._key.public_key()

    def sign(self, context: str, data: bytes) -> bytes:
        return crypto.sign(self._key, context, data)

    def to_pem(self, passphrase: str | None = None) -> bytes:
        """PKCS#8 PEM of the private key, encrypted when a passphrase is given (:func:`crypto.export_private`)."""
        return crypto.export_private(self._key, passphrase)

    def save(self, path: Path, passphrase: str | None = None) -> None:
        """Write the key atomically with mode 0600 (never world- or group-readable, even briefly), replacing
        what ``path`` held."""
        replace_file(path, self.to_pem(passphrase), _cannot_write(path))

    def save_new(self, path: Path, passphrase: str | None = None) -> bool:
        """Write the key as ``path`` unless a file is there already (False): of two processes making a data
        directory's first key at once, one key wins and both use it."""
        return write_new_file(path, self.to_pem(passphrase), _cannot_write(path))

    @classmethod
    def load(cls, path: Path, passphrase: str | None = None) -> Identity:
        """Read a key file; refuses files that others can read, wrong passphrases and non-keys."""
        problem = slot_problem(path)
        if problem is not None:
            raise IdentityError(f"the identity key {path} {problem}")
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IdentityError(f"no identity key at {path}") from None
        exposed = exposure_problem(st, path)
        if exposed is not None:
            raise IdentityError(f"the identity key {path} {exposed}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read the identity key {path}: {exc.strerror or exc}") from None
        encrypted = b"ENCRYPTED" in data
        if encrypted and not passphrase:
            raise IdentityError(f"the identity key {path} is protected by a passphrase; give it with "
                                "--passphrase-file or the P2PCHAT_PASSPHRASE variable")
        try:
            key = crypto.import_private(data, passphrase if encrypted else None)
        except ValueError:
            if encrypted:
                raise IdentityError(f"wrong passphrase for the identity key {path}") from None
            raise IdentityError(f"the identity key {path} is damaged (not a readable RSA private key); p2pchat did "
                                f"not change it. Restore it from a backup; moving it aside makes a new key "
                                f"next time, a new identity your contacts and the ledger do not know: "
                                f"{_aside_command(path)}") from None
        except crypto.CryptoError as exc:      # a key, but one every peer would refuse (e.g. e = 3, 2048 bits)
            raise IdentityError(f"the identity key {path} cannot be used: {exc}") from None
        return cls(key)

    @classmethod
    def load_or_create(cls, data_dir: Path, passphrase: str | None = None, *,
                       progress: KeygenProgress | None = None, stop: threading.Event | None = None) -> Identity:
        """The identity in ``data_dir``, created on first use (raced across the cores, see
        :mod:`p2pchat.foundation.keygen`; ``progress`` shows it)."""
        from p2pchat.foundation import keygen

        path = data_dir / KEY_FILE
        if os.path.lexists(path):      # a dangling link too: refused by load, never replaced by a new key
            return cls.load(path, passphrase)
        started = time.monotonic()
        ident = cls(keygen.generate_identity_key(progress=progress.tick if progress is not None else None, stop=stop))
        if progress is not None:
            progress.done(time.monotonic() - started)
        if not ident.save_new(path, passphrase):
            log.info("another process made the identity key %s meanwhile; using it", path)
            return cls.load(path, passphrase)
        log.info("created identity key %s (fingerprint %s)", path, ident.short_fingerprint)
        return ident

    def __repr__(self) -> str:
        return f"Identity({self.short_fingerprint})"


def _cannot_write(path: Path) -> Callable[[str], IdentityError]:
    return lambda reason: IdentityError(f"could not write the identity key {path}: {reason}")


def _aside_command(path: Path) -> str:
    aside = f"{path}.bad-{time.strftime('%Y%m%d-%H%M%S')}"
    return f"mv {shlex.quote(str(path))} {shlex.quote(aside)}"
