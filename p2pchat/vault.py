"""The at-rest key of a data directory: what encrypts the history and the contact store (issues 13 and 15).

A data directory either has a passphrase or not; ``vault.json`` (mode 0600) records which. With a passphrase:

- ``master = scrypt(UTF-8(passphrase), salt, N, r, p, 32 bytes)`` with the salt and parameters stored in the
  file (new files: :data:`SCRYPT_N` = 2^17, r = 8, p = 1, a 16-byte random salt: 128 MiB and about 0.3 s here);
- ``seal_key ‖ index_key ‖ check = HKDF-SHA256(master, salt = "", info = "p2pchat/vault/1\\0keys", 3 × 32 B)``;
- the file keeps ``check``: a wrong passphrase gives another ``check`` and is refused as such
  (:class:`WrongPassphrase`), before anything is read or written with the wrong key;
- :meth:`Vault.seal` is AES-256-GCM under ``seal_key`` with a random 12-byte nonce and the caller's associated
  data (which binds a row's purpose and identity, so rows cannot be swapped); a sealed blob is
  ``0x01 ‖ nonce ‖ ciphertext ‖ tag``;
- :meth:`Vault.index_tag` is ``HMAC-SHA256(index_key, UTF-8(text))``, for equality lookups on encrypted columns.

Without a passphrase nothing is encrypted: :meth:`Vault.seal` returns the plaintext and :meth:`Vault.index_tag`
the UTF-8 bytes, so the stores are plain SQLite files that only their mode (0600) protects.

The same passphrase protects the identity key (PKCS#8, :mod:`p2pchat.foundation.identity`): when a passphrase is
first given for a data directory whose key is still plain, the key is saved again under it. The format is
described in docs/history.md.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from p2pchat.foundation import crypto
from p2pchat.foundation.datadir import slot_problem, write_new_file
from p2pchat.foundation.errors import IdentityError, LocalFault, UsageError
from p2pchat.foundation.identity import KEY_FILE, Identity

FILE_NAME = "vault.json"
FORMAT = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = crypto.SCRYPT_N, crypto.SCRYPT_R, crypto.SCRYPT_P    # as the key file's
MAX_SCRYPT_N = 1 << 22          # a file asking for more (4 GiB at r = 8) is refused, not obeyed
SALT_LEN = crypto.SCRYPT_SALT_LEN
SEALED_VERSION = 1
_KEYS_INFO = b"p2pchat/vault/1\x00keys"
_NONCE = crypto.GCM_NONCE_LEN
_HOW_TO_GIVE = "give it with --passphrase-file FILE or the P2PCHAT_PASSPHRASE variable"
log = logging.getLogger(__name__)


class VaultError(LocalFault):
    """``vault.json`` cannot be read or written; nothing was changed."""


class PassphraseNeeded(UsageError):
    """The data directory is protected by a passphrase and none was given."""


class WrongPassphrase(UsageError):
    """The passphrase given is not the data directory's."""


class Vault:
    """The at-rest key of one data directory (or none: :attr:`encrypted` is False)."""

    def __init__(self, data_dir: Path, keys: tuple[bytes, bytes, bytes] | None) -> None:
        self.data_dir = Path(data_dir)
        self._keys = keys
        if keys is not None:
            crypto.keep_keys_out_of_core_dumps()

    # --- opening ----------------------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path, passphrase: str | None, *, scrypt_n: int = SCRYPT_N) -> Vault:
        """The vault of ``data_dir``. A passphrase given for a directory without one becomes its passphrase
        (``scrypt_n`` is the cost of a new record; tests lower it); none given for a directory with one is
        refused (:class:`PassphraseNeeded`), and so is the wrong one (:class:`WrongPassphrase`)."""
        data_dir = Path(data_dir)
        for _ in range(3):      # another process may create or replace the record meanwhile: read it again
            record = _read_record(data_dir)
            if record is not None and record["protection"] == "scrypt":
                if not passphrase:
                    raise PassphraseNeeded(f"the history and contacts in {data_dir} are protected by a passphrase; "
                                           f"{_HOW_TO_GIVE}")
                keys = _unlock(data_dir, record, passphrase)
                _finish_protecting_identity(data_dir, passphrase)
                return cls(data_dir, keys)
            if not passphrase:
                return cls(data_dir, None)
            vault = cls._create(data_dir, passphrase, scrypt_n, replace_plain=record is not None)
            if vault is not None:
                return vault
        raise VaultError(f"{data_dir / FILE_NAME} keeps changing under this process; is another p2pchat setting "
                         f"a passphrase right now?")

    @classmethod
    def _create(cls, data_dir: Path, passphrase: str, scrypt_n: int, *, replace_plain: bool) -> Vault | None:
        """Make ``passphrase`` the directory's; ``None`` when another process wrote a record first."""
        salt = crypto.random_bytes(SALT_LEN)
        params = {"n": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P}
        keys = _derive(passphrase, salt, params)
        record = {"format": FORMAT, "protection": "scrypt", "scrypt": params, "salt": salt.hex(),
                  "check": keys[2].hex()}
        path = data_dir / FILE_NAME
        _protect_identity(data_dir, passphrase, check_only=True)
        if replace_plain:
            # Claim the "no passphrase" record by renaming it away: of two processes only one succeeds.
            claimed = data_dir / f"{FILE_NAME}.claim-{os.getpid()}"
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise VaultError(f"cannot replace {path}: {exc.strerror}") from None
            claimed.unlink()
        if not _write_exclusive(path, record):
            return None
        _protect_identity(data_dir, passphrase)
        log.info("the data directory %s is now protected by a passphrase", data_dir)
        return cls(data_dir, keys)

    @staticmethod
    def asked(data_dir: Path) -> bool:
        """Whether the user was ever asked for a passphrase here (a record exists, with or without one)."""
        return (Path(data_dir) / FILE_NAME).exists()

    @staticmethod
    def remember_no_passphrase(data_dir: Path) -> None:
        """Record that the user chose no passphrase (so the first-run question is not asked again)."""
        _write_exclusive(Path(data_dir) / FILE_NAME, {"format": FORMAT, "protection": "none"})

    # --- using ------------------------------------------------------------------------------------------

    @property
    def encrypted(self) -> bool:
        return self._keys is not None

    @property
    def key_check(self) -> bytes:
        """What a store records to know which key its rows are under (empty: plain)."""
        if self._keys is None:
            return b""
        return crypto.hmac_sha256(self._keys[1], b"p2pchat/vault/1\x00store-key-check")

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        """``plaintext`` encrypted and bound to ``aad`` (plain vault: ``plaintext`` itself)."""
        if self._keys is None:
            return plaintext
        nonce = crypto.random_bytes(_NONCE)
        return bytes([SEALED_VERSION]) + nonce + crypto.seal(self._keys[0], nonce, plaintext, aad)

    def open_sealed(self, aad: bytes, blob: bytes) -> bytes:
        """The plaintext of :meth:`seal`'s ``blob``; :class:`~p2pchat.foundation.errors.CryptoError` when it was
        altered, moved to another row (other ``aad``) or sealed under another key."""
        if self._keys is None:
            return bytes(blob)
        if len(blob) < 1 + _NONCE + crypto.GCM_TAG_LEN or blob[0] != SEALED_VERSION:
            raise crypto.CryptoError("a stored entry is not a sealed entry of this version")
        return crypto.open_sealed(self._keys[0], bytes(blob[1:1 + _NONCE]), bytes(blob[1 + _NONCE:]), aad)

    def index_tag(self, text: str | bytes) -> bytes:
        """A lookup key for an encrypted column: equal texts give equal tags; a tag tells nothing of its text
        without the key (plain vault: the UTF-8 bytes)."""
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        if self._keys is None:
            return data
        return crypto.hmac_sha256(self._keys[1], data)

    def __repr__(self) -> str:
        return f"Vault({self.data_dir}, {'encrypted' if self.encrypted else 'plain'})"


def _derive(passphrase: str, salt: bytes, params: dict[str, int]) -> tuple[bytes, bytes, bytes]:
    master = crypto.scrypt(passphrase.encode("utf-8", "surrogatepass"), salt, n=params["n"], r=params["r"],
                           p=params["p"])
    seal_key, index_key, check = crypto.hkdf(master, b"", _KEYS_INFO, crypto.AES_KEY_LEN, 3)
    return seal_key, index_key, check


def _unlock(data_dir: Path, record: dict[str, Any], passphrase: str) -> tuple[bytes, bytes, bytes]:
    keys = _derive(passphrase, bytes.fromhex(record["salt"]), record["scrypt"])
    if not crypto.constant_time_equal(keys[2], bytes.fromhex(record["check"])):
        raise WrongPassphrase(f"wrong passphrase for the history and contacts in {data_dir} (they are encrypted "
                              f"with another one)")
    return keys


def _damaged(path: Path, what: str) -> VaultError:
    return VaultError(f"the passphrase record {path} {what}; p2pchat did not change it. Without it the encrypted "
                      f"history and contacts cannot be read; restore it from a backup, or move it aside together "
                      f"with history.sqlite3 and contacts.sqlite3 to start afresh")


def _read_record(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / FILE_NAME
    problem = slot_problem(path)
    if problem is not None:
        raise VaultError(f"the passphrase record {path} {problem}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VaultError(f"cannot read {path}: {exc.strerror}") from None
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _damaged(path, "is damaged (not JSON)") from None
    if not isinstance(record, dict) or not isinstance(record.get("format"), int):
        raise _damaged(path, "is damaged (no format)")
    if record["format"] > FORMAT:
        raise _damaged(path, f"was written by a newer p2pchat (format {record['format']}; this one reads "
                             f"format {FORMAT})")
    protection = record.get("protection")
    if record["format"] != FORMAT or protection not in ("none", "scrypt"):
        raise _damaged(path, "is damaged (unknown format or protection)")
    if protection == "scrypt" and not _valid_scrypt_record(record):
        raise _damaged(path, "is damaged (bad scrypt parameters, salt or check)")
    return record


def _valid_scrypt_record(record: dict[str, Any]) -> bool:
    params, salt, check = record.get("scrypt"), record.get("salt"), record.get("check")
    if not isinstance(params, dict) or set(params) != {"n", "r", "p"}:
        return False
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in params.values()):
        return False
    n, r, p = params["n"], params["r"], params["p"]
    if not (2 <= n <= MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    if not isinstance(salt, str) or not isinstance(check, str):
        return False
    try:
        return len(bytes.fromhex(salt)) >= SALT_LEN and len(bytes.fromhex(check)) == crypto.AES_KEY_LEN
    except ValueError:
        return False


def _write_exclusive(path: Path, record: dict[str, Any]) -> bool:
    """Write ``record`` as ``path`` (mode 0600) unless the file exists; False when it did."""
    return write_new_file(path, (json.dumps(record, indent=1) + "\n").encode("utf-8"),
                          lambda reason: VaultError(f"cannot write {path}: {reason}"))


def _finish_protecting_identity(data_dir: Path, passphrase: str) -> None:
    """A plain identity key beside a passphrase record: the process that set the passphrase was stopped (killed,
    a full disk) between writing the record and saving the key again under it, so that save is done now. A key
    protected below the current scrypt cost is saved again at it."""
    try:
        data = (data_dir / KEY_FILE).read_bytes()
    except OSError:
        return      # no key yet, or one that Identity.load will refuse in its own words
    if b"ENCRYPTED" not in data or crypto.private_pem_weaker_than_policy(data):
        _protect_identity(data_dir, passphrase)


def _protect_identity(data_dir: Path, passphrase: str, *, check_only: bool = False) -> None:
    """An identity key protected already must open with this passphrase (one passphrase for everything); a plain
    one, or one protected below the current scrypt cost, is saved again under it (unless ``check_only``: before
    the record is made)."""
    path = data_dir / KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise VaultError(f"cannot read the identity key {path}: {exc.strerror}") from None
    if b"ENCRYPTED" in data:
        try:
            identity = Identity.load(path, passphrase)
        except IdentityError as exc:
            if "wrong passphrase" in str(exc):
                raise WrongPassphrase(f"wrong passphrase: the identity key {path} is protected by another one, "
                                      f"and one passphrase protects the key, history and contacts") from None
            raise
        if not check_only and crypto.private_pem_weaker_than_policy(data):
            # written under weaker scrypt parameters (an older pycryptodome's defaults): saved again at the
            # vault's cost, or the key file would be the cheaper way to guess the passphrase (crypto review)
            try:
                identity.save(path, passphrase)
            except (OSError, IdentityError) as exc:
                log.warning("the identity key %s was not re-encrypted at the current cost: %s", path, exc)
        return
    if check_only:
        return
    try:
        Identity.load(path).save(path, passphrase)
    except (OSError, IdentityError) as exc:
        log.warning("the identity key %s was not re-encrypted under the passphrase: %s", path, exc)


__all__ = ["FILE_NAME", "SCRYPT_N", "PassphraseNeeded", "Vault", "VaultError", "WrongPassphrase"]
