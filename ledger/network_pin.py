"""Networks pinned by their genesis (trust on first use, like SSH's known_hosts).

A data directory remembers, per network name, the full parameters of the network it belongs to in
``network-<name>.json``: ``{"network_id": <genesis hash, 64 hex digits>, "params": {<every parameter>}}``.
``ledger serve`` writes it for the network it creates; ``ledger join`` writes it on the first join (from
``--network-id`` or from the first peer that answers) and from then on refuses any peer whose parameters give
another genesis hash. The light client (``ledger lookup``/``status`` and the chat node's lookups) reads it from
the same data directory and pins every parameter, so a same-named network with other parameters is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from ledger.errors import LedgerError
from ledger.params import NAME_PATTERN, NetworkParams
from p2pchat.foundation.datadir import replace_file, slot_problem

PIN_PREFIX = "network-"
PIN_SUFFIX = ".json"


class NetworkMismatch(LedgerError):
    """A peer (or a given ``--network-id``) names another network than the one pinned."""


def pin_path(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / f"{PIN_PREFIX}{name}{PIN_SUFFIX}"


def load_pin(data_dir: Path, name: str) -> NetworkParams | None:
    """The pinned parameters of network ``name`` in ``data_dir``, None if it was never pinned there.
    Raises :class:`LedgerError` if the pin file is damaged (its parameters must give its network id)."""
    path = pin_path(data_dir, name)
    problem = slot_problem(path)
    if problem is not None:
        raise LedgerError(f"the pinned network id {path} {problem}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerError(f"cannot read the pinned network id in {path}: {exc.strerror or exc}") from None
    except ValueError as exc:       # not UTF-8 (UnicodeDecodeError is one), not JSON: cut short or overwritten
        raise LedgerError(f"{path} is damaged ({exc}); delete it and join again with --network-id") from None
    try:
        params = NetworkParams.from_wire(data["params"])
        stated = str(data["network_id"])
    except (LedgerError, KeyError, TypeError) as exc:
        raise LedgerError(f"{path} is damaged ({exc}); delete it and join again with --network-id") from None
    if params.genesis_hash.hex() != stated or params.name != name:
        raise LedgerError(f"{path} is damaged (its parameters do not give its network id); delete it and join "
                          "again with --network-id")
    return params


def save_pin(data_dir: Path, params: NetworkParams) -> Path:
    """Pin ``params`` in ``data_dir`` (written to a temporary file, then renamed into place)."""
    path = pin_path(data_dir, params.name)
    text = json.dumps({"network_id": params.genesis_hash.hex(), "params": params.to_wire()}, indent=1,
                      sort_keys=True)
    replace_file(path, (text + "\n").encode("utf-8"),   # a full disk: the old pin (if any) stays, no copy is left
                 lambda reason: LedgerError(f"could not write the pinned network id {path}: {reason}"))
    return path


def pinned_names(data_dir: Path) -> list[str]:
    """Names of the networks pinned in ``data_dir``."""
    names = []
    for p in Path(data_dir).glob(f"{PIN_PREFIX}*{PIN_SUFFIX}"):
        name = p.name[len(PIN_PREFIX):-len(PIN_SUFFIX)]
        if NAME_PATTERN.fullmatch(name):
            names.append(name)
    return sorted(names)


def find_pin(data_dir: Path | None, name: str | None) -> NetworkParams | None:
    """The pin a light client should use: the one for ``name``, or without a name the only one there is."""
    if data_dir is None or not Path(data_dir).is_dir():
        return None
    if name is not None:
        return load_pin(data_dir, name)
    names = pinned_names(data_dir)
    return load_pin(data_dir, names[0]) if len(names) == 1 else None


def check_pinned(params: NetworkParams, pinned: NetworkParams, where: str) -> None:
    """Refuse ``params`` (announced by ``where``) unless they are the pinned network's."""
    if params.genesis_hash == pinned.genesis_hash:
        return
    raise NetworkMismatch(mismatch_message(where, params.name, params.genesis_hash, pinned,
                                           peer_difficulty=params.difficulty_bits))


def mismatch_message(where: str, peer_name: str, peer_id: bytes, ours: NetworkParams, *,
                     peer_difficulty: int | None = None) -> str:
    """The plain sentence shown when a peer is on another network than ours (both ids, in groups)."""
    from ledger.params import format_network_id

    same = peer_name == ours.name
    what = "the same name with other parameters" if same else "another network"
    detail = ""
    if same and peer_difficulty is not None and peer_difficulty != ours.difficulty_bits:
        detail = f", difficulty {peer_difficulty} bits instead of {ours.difficulty_bits}"
    return (f"{where} is on network '{peer_name[:64]}' with id {format_network_id(peer_id)}, but the network "
            f"'{ours.name}' pinned on this machine has id {format_network_id(ours.genesis_hash)} ({what}{detail}); "
            "refusing it")
