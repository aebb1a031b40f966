"""Coverage-guided fuzzing (atheris / libFuzzer) of every decoder that takes bytes from outside, for runs longer
than CI affords. The hypothesis tests next to this file run the same properties with bounded examples in CI.

    pip install atheris
    python3 tests/fuzz/atheris_targets.py TARGET [--seed-corpus DIR] [libFuzzer options] [CORPUS_DIR]
    python3 tests/fuzz/atheris_targets.py --list

e.g. ``python3 tests/fuzz/atheris_targets.py chat-frames -max_total_time=600 -rss_limit_mb=2048 -timeout=10``.
bench/fuzz_long.md has the commands for a full run and the figures measured. A target fails (libFuzzer writes the
input to ``crash-<sha1>``) when a decoder raises anything but its documented refusal, hangs past ``-timeout`` or
grows past ``-rss_limit_mb``; reproduce with ``python3 tests/fuzz/atheris_targets.py TARGET crash-<sha1>``.
"""

from __future__ import annotations

import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

if True:  # imports first, then atheris.instrument_all() in main() adds coverage feedback to every loaded function
    import msgpack

    from gui import settings as gui_settings
    from ledger.blocks import Block, BlockHeader
    from ledger.chain import Chain
    from ledger.errors import LedgerError, StoreError
    from ledger.local_ledger import LocalLedger, LookupAnswer, store_path
    from ledger.params import NetworkParams
    from ledger.protocol import LEDGER_PROTOCOL, PeerHello
    from ledger.records import Record
    from p2pchat.chat_protocol import CHAT, SEALED_CONTENT
    from p2pchat.foundation.codec import Protocol
    from p2pchat.foundation.errors import FrameError, IdentityError, ProtocolError
    from p2pchat.foundation.identity import Identity
    from p2pchat.relay.protocol import DEFAULT_MAX_FRAME, relay_protocol

UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)
PARAMS = NetworkParams(name="atheris", difficulty_bits=1)
_TMP = Path(tempfile.mkdtemp(prefix="p2pchat-atheris-"))


def _unpack(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


def frames(protocol: Protocol) -> Callable[[bytes], None]:
    """The input as a frame body (length prefix added, so the fuzzer explores the msgpack and the schemas), fed
    to the incremental reader in two pieces cut at the first byte's value, then the raw input as a stream:
    FrameError only."""
    def target(data: bytes) -> None:
        cut = data[0] if data else 0
        stream = struct.pack(">I", len(data)) + data
        for chunks in ((stream[:cut], stream[cut:]), (data,)):
            reader = protocol.reader()
            try:
                for chunk in chunks:
                    reader.feed(chunk)
            except FrameError:
                pass
    return target


def record(data: bytes) -> None:
    try:
        value = _unpack(data)
    except UNPACK_ERRORS:
        return
    try:
        Record.from_wire(value).verify_signatures(PARAMS.name)
    except LedgerError:
        pass


_CHAIN = Chain(PARAMS)
_CHAIN_LOCK = threading.Lock()


def block(data: bytes) -> None:
    try:
        value = _unpack(data)
    except UNPACK_ERRORS:
        return
    try:
        parsed = Block.from_wire(value)
    except LedgerError:
        return
    with _CHAIN_LOCK:
        result = _CHAIN.add_block(parsed, 2_000_000_000)
    assert result.status in ("added", "duplicate", "orphan", "invalid")


def header(data: bytes) -> None:
    try:
        parsed = BlockHeader.unpack(data)
    except LedgerError:
        return
    try:
        _CHAIN.check_header(parsed, 2_000_000_000)
    except LedgerError:
        pass


def params(data: bytes) -> None:
    try:
        value = _unpack(data)
    except UNPACK_ERRORS:
        return
    try:
        NetworkParams.from_wire(value, PARAMS.genesis_hash if data[:1] == b"\x00" else None)
    except LedgerError:
        pass


def lookup(data: bytes) -> None:
    try:
        value = _unpack(data)
    except UNPACK_ERRORS:
        return
    try:
        LookupAnswer.from_wire(value).verify_proof()
    except LedgerError:
        pass


def hello(data: bytes) -> None:
    try:
        msg = LEDGER_PROTOCOL.decode(data)
        PeerHello.from_message(msg)
    except (FrameError, ProtocolError):
        pass


_HANDSHAKE: list[Callable[[bytes], None]] = []


def handshake(data: bytes) -> None:
    """A responder and an initiator handshake core fed every frame of the input stream: they never raise."""
    if not _HANDSHAKE:
        from p2pchat.handshake import Handshake

        ident = Identity.generate()

        def run(stream: bytes) -> None:
            for initiator in (False, True):
                hs = Handshake(initiator=initiator, identity=ident, nickname="fuzz", network="p2pchat",
                               local_address="127.0.0.2:8471", peer_address="127.0.0.3:8471")
                if initiator:
                    hs.start(1)
                reader = CHAT.reader()
                try:
                    for msg in reader.feed(stream):
                        hs.receive(msg)
                except FrameError:
                    pass
        _HANDSHAKE.append(run)
    _HANDSHAKE[0](data)


_CHANNEL: list[Callable[[bytes], None]] = []


def channel(data: bytes) -> None:
    """An established channel fed the frames of the input: only Refused/Abort events, never a Text."""
    if not _CHANNEL:
        from p2pchat.channel import Channel, Text
        from tests.p2pchat.handshake_pair import established_pair

        est_i, _ = established_pair(Identity.generate(), Identity.generate())
        import copy

        def run(stream: bytes) -> None:
            ch = Channel(copy.copy(est_i))
            try:
                for msg in CHAT.reader().feed(stream):
                    assert not any(isinstance(ev, Text) for ev in ch.receive(msg))
            except FrameError:
                pass
        _CHANNEL.append(run)
    _CHANNEL[0](data)


def sealed_content(data: bytes) -> None:
    try:
        SEALED_CONTENT.decode(data)
    except FrameError:
        pass


def identity_file(data: bytes) -> None:
    path = _TMP / "identity.pem"
    path.write_bytes(data)
    path.chmod(0o600)
    try:
        Identity.load(path, "passphrase" if data[:1] == b"\x01" else None)
    except IdentityError:
        pass


def settings_file(data: bytes) -> None:
    (_TMP / gui_settings.FILE_NAME).write_bytes(data)
    gui_settings.load(_TMP)


def store_file(data: bytes) -> None:
    folder = _TMP / "store"
    folder.mkdir(exist_ok=True)
    for leftover in folder.iterdir():
        leftover.unlink()
    store_path(folder, PARAMS.name).write_bytes(data)
    try:
        LocalLedger(folder, PARAMS, clock=lambda: 2_000_000_000).close()
    except StoreError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "ledger-frames": frames(LEDGER_PROTOCOL),
    "chat-frames": frames(CHAT),
    "relay-frames": frames(relay_protocol(DEFAULT_MAX_FRAME)),
    "sealed-content": sealed_content,
    "record": record,
    "block": block,
    "header": header,
    "params": params,
    "lookup-answer": lookup,
    "ledger-hello": hello,
    "handshake": handshake,
    "channel": channel,
    "identity-file": identity_file,
    "settings-file": settings_file,
    "store-file": store_file,
}


def seeds(name: str) -> list[bytes]:
    """Valid inputs of a target, written to the corpus directory first so the fuzzer starts from real frames."""
    from ledger.merkle import merkle_root
    from ledger.miner import mine
    from ledger.records import make_register
    from tests.conftest import make_identities
    from tests.fuzz.test_fuzz_codec_frames import SAMPLES

    def body(frame: bytes) -> bytes:
        return frame[4:]

    ident = make_identities(1)[0]
    rec = make_register(ident, network=PARAMS.name, seq=0, prev=bytes(32), nickname="seed", ip="10.0.0.1",
                        port=8471, ledger_port=8470, issued=1_900_000_000, lifetime=86400)
    head = BlockHeader(PARAMS.version, PARAMS.network_id, 1, PARAMS.genesis_hash, merkle_root([rec.id]),
                       1_900_000_100, PARAMS.difficulty_bits, 0)
    solved = mine(head, threading.Event())
    assert solved is not None
    blk = Block(solved, (rec,))
    pack = lambda v: msgpack.packb(v, use_bin_type=True)  # noqa: E731
    return {
        "ledger-frames": [body(f) for f in SAMPLES["ledger"]],
        "chat-frames": [body(f) for f in SAMPLES["chat"]],
        "relay-frames": [body(f) for f in SAMPLES["relay-server"]],
        "sealed-content": [body(f) for f in SAMPLES["chat-sealed"]],
        "record": [pack(rec.to_wire())],
        "block": [pack(blk.to_wire())],
        "header": [solved.packed],
        "params": [pack(PARAMS.to_wire()), pack(NetworkParams().to_wire())],
        "lookup-answer": [pack({"record": rec.to_wire(), "header": solved.packed, "index": 0, "path": [],
                                "height": 1, "confirmations": 1})],
        "ledger-hello": [body(SAMPLES["ledger"][0])],
        "handshake": [SAMPLES["chat"][0]],
        "channel": [SAMPLES["chat"][2]],
        "identity-file": [ident.to_pem()],
        "settings-file": [b'{"width": 900, "height": 700, "x": 10, "y": 20, "scaling": 1.25, "appearance": "Dark"}'],
        "store-file": [],
    }[name]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "--list"):
        print(__doc__)
        print("targets: " + ", ".join(TARGETS))
        return
    name, args = sys.argv[1], sys.argv[2:]
    target = TARGETS[name]
    if "--seed-corpus" in args:      # --seed-corpus DIR: write the seeds there and fuzz with DIR as the corpus
        i = args.index("--seed-corpus")
        corpus = Path(args[i + 1])
        corpus.mkdir(parents=True, exist_ok=True)
        for n, seed in enumerate(seeds(name)):
            (corpus / f"seed-{n}").write_bytes(seed)
        args = [*args[:i], *args[i + 2:], str(corpus)]
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *args], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
