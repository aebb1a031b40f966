"""Key continuity at step 2: the key the ledger names now against the key this data directory pinned (issue 13).

The handshake driver asks :meth:`KeyContinuity.check` with the ledger's answer for the peer, before the answer
reaches the handshake core (so before anything is signed). The verdict is one of:

- :class:`Unchanged` — nothing pinned there, or the same key: go on;
- :class:`Changed` — a change that is fine: the ledger proves it (a rotation record signed by the pinned key), or
  the pinned key's own record now names another address or nickname (the address moved to another person: a
  new contact), or the user accepted this very key (``accept_new_key``). The node shows ``notice`` at once and
  applies ``change`` to the store only after step 4 succeeded;
- :class:`Refused` — an unexplained change: step 2 fails with ``reason``, a message for a person in the manner
  of OpenSSH's "REMOTE HOST IDENTIFICATION HAS CHANGED". ``hard`` when the user had verified the contact.

:meth:`KeyContinuity.record` writes the pin after step 4; a peer cannot make the node pin anything earlier.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ledger.client import VerifiedBinding
from p2pchat.contacts import Contact, ContactStore
from p2pchat.display import one_line
from p2pchat.flags import ACCEPT_FLAG, OVERRIDE_FLAG
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import format_address
from p2pchat.foundation.errors import UsageError
from p2pchat.links import Binding
from p2pchat.peer_directory import PeerDirectory, PeerNotFound, query_kind

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PinChange:
    """What to write once step 4 succeeded: ``old_fp``'s contact moves to the new key (``rotated`` /
    ``accepted``), or the new key is a new contact at an address the old key left (``moved``)."""

    old_fp: str
    decision: str
    detail: str
    keep_verified: bool


@dataclass(frozen=True)
class Unchanged:
    pass


@dataclass(frozen=True)
class Changed:
    notice: str
    change: PinChange


@dataclass(frozen=True)
class Refused:
    reason: str
    hard: bool
    new_fp: str = ""        # hex; empty when no key change is behind the refusal
    old_fp: str = ""
    who: str = ""           # the pinned contact's name (local name or nickname)


Verdict = Unchanged | Changed | Refused


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def _fp_text(fp: bytes | str) -> str:
    raw = bytes.fromhex(fp) if isinstance(fp, str) else fp
    return crypto.format_fingerprint(raw, 16)


def rotated_from(binding: Binding) -> bytes | None:
    """The fingerprint of the key a rotation record retired, when the ledger's answer is that rotation."""
    if isinstance(binding, VerifiedBinding) and binding.record.kind == "rotate":
        return binding.record.signer_fingerprint
    return None


def parse_fingerprint(text: str) -> str:
    """A full fingerprint as the user may type it (groups, colons, any case) → 64 lowercase hex digits."""
    kind, value = query_kind(text)
    if kind != "fp":
        raise UsageError(f"{ACCEPT_FLAG} takes the new key's full fingerprint (64 hex digits, spaces allowed), "
                         f"as the key-change message prints it")
    return value


class KeyContinuity:
    """Pins of one data directory, checked at step 2 and written after step 4 (thread-safe)."""

    def __init__(self, store: ContactStore, directory: PeerDirectory) -> None:
        self.store = store
        self.directory = directory
        self._lock = threading.Lock()
        self._accepted: dict[str, bool] = {}      # new key fp → the user also overrode a verified mark

    def accept_new_key(self, fingerprint: str, *, override_verified: bool = False) -> None:
        """The user accepts this key where another was pinned (the next chat that meets it goes on; the decision
        is logged when that chat succeeds). ``override_verified`` is needed when the old key was verified."""
        fp = parse_fingerprint(fingerprint)
        with self._lock:
            self._accepted[fp] = override_verified

    # --- step 2 -----------------------------------------------------------------------------------------

    def check(self, query: str, by: str | None, binding: Binding) -> Verdict:
        """The verdict on the ledger's ``binding`` for what the handshake looked up (``by``: ``"ip"``,
        ``"nick"``, ``"fp"`` or ``None``: detect)."""
        kind, value = query_kind(query) if by is None else (by, query)
        if kind == "fp":
            return Unchanged()          # the user named the key itself: nothing else can be pinned for it
        pinned = self.store.pinned_for(kind, value)
        new_fp = binding.fingerprint
        if pinned is None or pinned.fp == new_fp.hex():
            return Unchanged()
        where = f"the address {value}" if kind == "ip" else f"the nickname {one_line(value)}"
        who = one_line(pinned.local_name or pinned.nickname or value)
        old = pinned.fingerprint
        if rotated_from(binding) == old:
            return self._rotated(pinned, who, new_fp, binding, "the rotation record in block "
                                 f"{binding.height}")
        old_now = self._old_key_now(pinned)
        if old_now is not None and old_now.fingerprint == new_fp:
            return self._rotated(pinned, who, new_fp, binding, "its record chain, which continues from the old "
                                 "key's rotation")
        if old_now is not None and old_now.fingerprint == old:
            moved = (kind == "ip" and old_now.ip != value) or (kind == "nick" and old_now.nickname != value)
            if moved:
                now_at = (f"the address {old_now.ip}" if kind == "ip" else
                          f"the nickname {one_line(old_now.nickname)}")
                return Changed(
                    f"{where} now belongs to another key ({_fp_text(new_fp)[:19]} …, nickname "
                    f"{one_line(binding.nickname)}): a new contact. Your contact {who} has moved to {now_at}.",
                    PinChange(pinned.fp, "moved", f"{where} moved from {pinned.fp} to {new_fp.hex()}; the old key "
                                                  f"now names {now_at}", keep_verified=False))
        with self._lock:
            accepted = self._accepted.get(new_fp.hex())
        if accepted is not None and (accepted or not pinned.verified):
            return Changed(
                f"you accepted the new key {_fp_text(new_fp)} for {who} ({where}); it replaces "
                f"{_fp_text(old)[:19]} … once this chat succeeds" +
                (" — the verified mark is removed: compare the safety number again" if pinned.verified else ""),
                PinChange(pinned.fp, "accepted", f"the user accepted {new_fp.hex()} in place of {pinned.fp} for "
                                                 f"{where}" + (" (verified contact, overridden)" if pinned.verified
                                                               else ""), keep_verified=False))
        return Refused(self._message(pinned, who, where, query, binding, accepted is not None), pinned.verified,
                       new_fp.hex(), pinned.fp, who)

    def _old_key_now(self, pinned: Contact) -> Binding | None:
        """What the ledger says now under the pinned key's fingerprint (None: nothing live)."""
        try:
            return self.directory.lookup(pinned.fp, "fp")
        except PeerNotFound:
            return None

    def _rotated(self, pinned: Contact, who: str, new_fp: bytes, binding: Binding, proof: str) -> Changed:
        mark = " It stays verified: the old key signed the change." if pinned.verified else ""
        return Changed(
            f"{who} replaced their key: the ledger proves it ({proof}, signed by the old key "
            f"{_fp_text(pinned.fp)[:19]} …). The pin now follows the new key {_fp_text(new_fp)}; the safety "
            f"number changes.{mark}",
            PinChange(pinned.fp, "rotated", f"rotation to {new_fp.hex()} proven by {proof}",
                      keep_verified=True))

    def _message(self, pinned: Contact, who: str, where: str, query: str, binding: Binding,
                 tried_accept: bool) -> str:
        new_fp = _fp_text(binding.fingerprint)
        old_fp = _fp_text(pinned.fp)
        nick = one_line(pinned.nickname) if pinned.nickname else "?"
        verified = (f", and you VERIFIED its safety number on {_when(pinned.verified_at)}"
                    if pinned.verified_at is not None else "")
        lines = [
            f"WARNING: THE KEY FOR {where} HAS CHANGED — the chat stopped at step 2; nothing was signed or sent.",
            f"Expected: key {old_fp} (nickname {nick}), which you chatted with from {_when(pinned.first_seen)} to "
            f"{_when(pinned.last_seen)}{verified}.",
            f"The ledger now says: key {new_fp} (nickname {one_line(binding.nickname)}), in its record in block "
            f"{binding.height} ({binding.confirmations} confirmation{'' if binding.confirmations == 1 else 's'}), "
            f"with no rotation signed by the old key.",
            f"What may be happening: {who} reinstalled or lost their key and registered a new one; or someone "
            f"took over {where} or rewrote the ledger to put their own key there (an attack on this chat).",
        ]
        fp_arg = binding.fingerprint.hex()
        if pinned.verified:
            lines.append(
                f"Because you verified {who}, this is a hard stop. Ask {who} in person or by phone whether their key "
                f"changed and compare the new safety number; only then accept it with: p2pchat chat {query} "
                f"{ACCEPT_FLAG} {fp_arg} {OVERRIDE_FLAG}" +
                (" (you gave the accept flag without the override)" if tried_accept else ""))
        else:
            lines.append(
                f"What to do: ask {who} through another channel (in person, by phone) whether their key changed, and "
                f"compare the safety number after connecting. To accept the new key: p2pchat chat {query} "
                f"{ACCEPT_FLAG} {fp_arg}")
        return "\n".join(lines)

    # --- after step 4 -----------------------------------------------------------------------------------

    def record(self, public_der: bytes, nickname: str | None, binding_ip: str | None, binding_port: int | None,
               change: PinChange | None) -> None:
        """Pin the key of a chat whose four steps succeeded (applying the change its step 2 allowed)."""
        fp = crypto.fingerprint(public_der)
        if change is not None:
            if change.decision == "moved":
                self.store.log_decision("moved", change.detail, old_fp=change.old_fp, new_fp=fp.hex())
            else:
                self.store.replace_key(change.old_fp, public_der, fp, decision=change.decision,
                                       detail=change.detail, keep_verified=change.keep_verified)
            if change.decision == "accepted":
                with self._lock:
                    self._accepted.pop(fp.hex(), None)
        address = format_address(binding_ip, binding_port) if binding_ip and binding_port else binding_ip
        self.store.record_chat(public_der, fp, nickname=nickname or None, ip=binding_ip, address=address)
        log.info("pinned key %s (%s)", _fp_text(fp)[:19], nickname)


__all__ = ["ACCEPT_FLAG", "OVERRIDE_FLAG", "Changed", "KeyContinuity", "PinChange", "Refused", "Unchanged",
           "Verdict", "parse_fingerprint", "rotated_from"]
