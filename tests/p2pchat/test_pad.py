"""One-time pads (issue 17): making and importing pads, the pad cipher, replay and crash safety."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from p2pchat.foundation import crypto
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.pad import (
    INDEX,
    MAC_KEY_LEN,
    TAG_LEN,
    Pad,
    PadError,
    PadExhausted,
    PadMeta,
    PadRefused,
    create_pad,
    import_pad,
    parse_size,
)
from tests.helpers import wait_until

ALICE, BOB = crypto.sha256(b"alice"), crypto.sha256(b"bob")


def installed(tmp_path: Path, size: int = 8192) -> tuple[Pad, Pad]:
    _, mine, theirs = create_pad(ALICE, BOB, size, tmp_path / "out")
    import_pad(mine, tmp_path / "alice", ALICE)
    import_pad(theirs, tmp_path / "bob", BOB)
    a, b = Pad.open(tmp_path / "alice", ALICE, BOB), Pad.open(tmp_path / "bob", BOB, ALICE)
    assert a is not None and b is not None
    return a, b


def test_parse_size_reads_binary_units() -> None:
    assert parse_size("64M") == 64 << 20
    assert parse_size("4k") == 4096
    with pytest.raises(PadError):
        parse_size("lots")
    with pytest.raises(PadError):
        parse_size("10")


def test_new_pad_has_two_identical_copies_with_hashes_and_private_modes(tmp_path: Path) -> None:
    meta, mine, theirs = create_pad(ALICE, BOB, 4096, tmp_path / "out")
    assert meta.half_size == 2048 and (meta.low, meta.high) == tuple(sorted((ALICE, BOB)))
    for d in (mine, theirs):
        assert PadMeta.load(d) == meta
        assert crypto.sha256((d / "a.bin").read_bytes()) == meta.sha_a
        assert crypto.sha256((d / "b.bin").read_bytes()) == meta.sha_b
        assert all((f.stat().st_mode & 0o777) == 0o600 for f in d.iterdir())
    assert (mine / "a.bin").read_bytes() != (mine / "b.bin").read_bytes()
    with pytest.raises(PadError, match="not empty"):
        create_pad(ALICE, BOB, 4096, tmp_path / "out")


def test_import_checks_hashes_owner_and_refuses_a_second_import(tmp_path: Path) -> None:
    _, mine, theirs = create_pad(ALICE, BOB, 4096, tmp_path / "out")
    with pytest.raises(PadError, match="two other keys"):
        import_pad(mine, tmp_path / "carol", crypto.sha256(b"carol"))
    damaged = bytearray((theirs / "b.bin").read_bytes())
    damaged[7] ^= 1
    (theirs / "b.bin").write_bytes(bytes(damaged))
    with pytest.raises(PadError, match="damaged"):
        import_pad(theirs, tmp_path / "bob", BOB)
    import_pad(mine, tmp_path / "alice", ALICE)
    installed_dir = tmp_path / "alice" / "pads" / BOB.hex()
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in installed_dir.iterdir())
    with pytest.raises(PadError, match="already imported"):
        import_pad(mine, tmp_path / "alice", ALICE)


def test_round_trip_both_ways_and_status(tmp_path: Path) -> None:
    a, b = installed(tmp_path)
    assert b.open_frame(a.seal("hello, bob ✓")) == "hello, bob ✓"
    assert a.open_frame(b.seal("hi alice")) == "hi alice"
    st = a.status()
    assert st.send_left == 4096 - (MAC_KEY_LEN + len("hello, bob ✓".encode())) - MAC_KEY_LEN
    assert st.recv_left == 4096 - (MAC_KEY_LEN + len(b"hi alice"))
    # the record survives reopening
    again = Pad.open(tmp_path / "alice", ALICE, BOB)
    assert again is not None and again.status() == st


def test_known_vector_from_fixed_pad_bytes(tmp_path: Path) -> None:
    a, _ = installed(tmp_path)
    send_half = (a.dir / ("a.bin" if ALICE < BOB else "b.bin")).read_bytes()
    frame = a.seal("hi")
    key, stream = send_half[:MAC_KEY_LEN], send_half[MAC_KEY_LEN:MAC_KEY_LEN + 2]
    ct = bytes(x ^ y for x, y in zip(b"hi", stream, strict=True))
    head = INDEX.pack(0)
    assert frame == head + ct + crypto.poly1305_one_time(key, b"p2pchat/pad-text/v1\x00" + head + ct)


def test_flipping_any_bit_is_detected(tmp_path: Path) -> None:
    a, b = installed(tmp_path, 16384)
    frame = a.seal("flip me")
    for bit in range(len(frame) * 8):
        bad = bytearray(frame)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PadRefused):
            b.open_frame(bytes(bad))
    assert b.open_frame(frame) == "flip me"       # nothing was spent by the refused ones


def test_replayed_or_overlapping_index_is_refused(tmp_path: Path) -> None:
    a, b = installed(tmp_path)
    first, second = a.seal("one"), a.seal("two")
    assert b.open_frame(first) == "one"
    with pytest.raises(PadRefused, match="replay"):
        b.open_frame(first)
    assert b.open_frame(second) == "two"
    with pytest.raises(PadRefused, match="replay"):
        b.open_frame(first)
    reopened = Pad.open(tmp_path / "bob", BOB, ALICE)
    assert reopened is not None
    with pytest.raises(PadRefused, match="replay"):
        reopened.open_frame(second)
    with pytest.raises(PadRefused, match="too short"):
        reopened.open_frame(b"\x00" * 5)
    with pytest.raises(PadRefused, match="past the end"):
        reopened.open_frame(INDEX.pack(2**40) + b"x" + bytes(TAG_LEN))


def test_both_sides_sending_at_once_use_disjoint_halves(tmp_path: Path) -> None:
    a, b = installed(tmp_path)
    fa, fb = a.seal("same time"), b.seal("same time")
    # both frames start at index 0 of their own half, yet the ciphertexts differ: different pad bytes
    assert fa[:8] == fb[:8] == INDEX.pack(0) and fa[8:-TAG_LEN] != fb[8:-TAG_LEN]
    assert a._send_path.name == b._recv_path.name != a._recv_path.name == b._send_path.name
    assert b.open_frame(fa) == a.open_frame(fb) == "same time"
    with pytest.raises(PadRefused):
        a.open_frame(fa)     # a frame of ours handed back is not accepted as the peer's


def test_two_users_of_one_installed_pad_never_get_the_same_bytes(tmp_path: Path) -> None:
    """Two openings of one installed pad (two sessions, or `p2pchat listen` and `p2pchat chat` on one data
    directory) spend it through the record on disk, so their frames never share pad bytes."""
    a1, b = installed(tmp_path)
    a2 = Pad.open(tmp_path / "alice", ALICE, BOB)
    assert a2 is not None
    frames = [(a1 if i % 2 else a2).seal(f"message {i}") for i in range(6)]
    starts = [INDEX.unpack_from(f)[0] for f in frames]
    assert starts == sorted(set(starts)) and [b.open_frame(f) for f in frames] == [f"message {i}" for i in range(6)]


def test_running_out_is_said_plainly_and_spends_nothing(tmp_path: Path) -> None:
    a, b = installed(tmp_path, 2048)      # 1024 bytes per direction
    big = "x" * (1024 - MAC_KEY_LEN)
    assert b.open_frame(a.seal(big)) == big
    assert a.status().send_left == 0
    with pytest.raises(PadExhausted, match="used up"):
        a.seal("one more")
    assert a.sent == 1024


def test_unreadable_record_stops_the_pad(tmp_path: Path) -> None:
    a, _ = installed(tmp_path)
    (a.dir / "used.json").write_text("{broken")
    with pytest.raises(PadError, match="unreadable"):
        Pad.open(tmp_path / "alice", ALICE, BOB)


SENDER = """
import os, sys, time
from pathlib import Path
from p2pchat.pad import Pad
data_dir, me, peer, log = Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4]
pad = Pad.open(data_dir, me, peer)
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, b"S")          # started
deadline = time.monotonic() + 5
for n in range(5000):
    if time.monotonic() > deadline:
        break
    frame = pad.seal("m" * (n % 37))
    os.write(fd, len(frame).to_bytes(4, "big") + frame)     # "sent"
"""


def _sent_ranges(log: Path) -> list[tuple[int, int]]:
    raw = log.read_bytes().replace(b"S", b"", 1) if log.exists() else b""
    out, pos = [], 0
    while pos + 4 <= len(raw):
        (n,) = struct.unpack_from(">I", raw, pos)
        frame = raw[pos + 4:pos + 4 + n]
        if len(frame) < n:
            break          # torn by the kill: never sent
        (index,) = INDEX.unpack_from(frame)
        out.append((index, index + MAC_KEY_LEN + n - INDEX.size - TAG_LEN))
        pos += 4 + n
    return out


def test_pad_bytes_are_never_reused_across_kill_9(tmp_path: Path) -> None:
    installed(tmp_path, 4 << 20)
    rng = random.Random(17)
    all_ranges: list[tuple[int, int]] = []
    for run in range(6):
        log = tmp_path / f"sent{run}.log"
        child = subprocess.Popen([sys.executable, "-c", SENDER, str(tmp_path / "alice"), ALICE.hex(), BOB.hex(),
                                  str(log)], cwd=Path(__file__).resolve().parents[2])
        try:
            # a random moment in the sending loop: once a random number of frames left (the child keeps going
            # while this polls, so the kill lands anywhere in the spend-record-send cycle)
            wanted = rng.randint(1, 40)
            wait_until(lambda log=log, wanted=wanted: len(_sent_ranges(log)) >= wanted, 15,
                       what=f"{wanted} frames from the sender")
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(10)
        ranges = _sent_ranges(log)
        recorded = json.loads((tmp_path / "alice" / "pads" / BOB.hex() / "used.json").read_text())["sent"]
        assert all(end <= recorded for _, end in ranges), "a frame left with bytes the record does not cover"
        all_ranges += ranges
    all_ranges.sort()
    assert len(all_ranges) >= 6      # at least one frame per run
    for (s1, e1), (s2, _) in itertools.pairwise(all_ranges):
        assert e1 <= s2, f"pad bytes reused: [{s1}, {e1}) and one starting at {s2}"
    pad = Pad.open(tmp_path / "alice", ALICE, BOB)
    assert pad is not None and pad.sent >= all_ranges[-1][1]


def test_protocol_md_pad_vector_from_the_spec_and_the_code(tmp_path: Path) -> None:
    """docs/protocol.md §5.7's vector: recomputed from the spec's layout, then produced by Pad.seal and opened."""
    from p2pchat.chat_protocol import PAD_FRAME_OVERHEAD, SEALED_CONTENT
    from tests.p2pchat.test_protocol_vectors import hx, load_vectors

    v = load_vectors()["pad-text"]
    key, keystream, index = hx("pad-text", "key"), hx("pad-text", "keystream"), int(v["index"])
    text = v["text"].encode()
    ct = bytes(x ^ y for x, y in zip(text, keystream, strict=True))
    head = index.to_bytes(8, "big")
    assert ct == hx("pad-text", "ciphertext")
    assert crypto.poly1305_one_time(key, b"p2pchat/pad-text/v1\x00" + head + ct) == hx("pad-text", "tag")
    assert head + ct + hx("pad-text", "tag") == hx("pad-text", "pad_frame")
    assert SEALED_CONTENT.encode_body("pad_mode", op="on?", pad_id=bytes(16)) == hx("pad-text", "pad_mode_on_body")
    assert PAD_FRAME_OVERHEAD == INDEX.size + TAG_LEN
    # the code: a pad whose sending half holds the vector's bytes at `index`
    a, b = installed(tmp_path)
    half = bytearray(a._send_path.read_bytes())
    half[index:index + 34] = key + keystream
    for p in (a._send_path, b._recv_path):
        p.chmod(0o600)
        p.write_bytes(bytes(half))
    a._record(index, 0)
    assert a.seal(v["text"]) == hx("pad-text", "pad_frame")
    assert b.open_frame(hx("pad-text", "pad_frame")) == v["text"]


def test_pad_commands_make_import_and_show_a_pad(tmp_path: Path, identities: list[Identity]) -> None:
    """`p2pchat pad new|import|status` as real processes on two data directories."""
    alice_dir, bob_dir, usb = tmp_path / "alice", tmp_path / "bob", tmp_path / "usb"
    for ident, d in ((identities[0], alice_dir), (identities[1], bob_dir)):
        d.mkdir(mode=0o700)
        ident.save(d / KEY_FILE)

    env = {k: v for k, v in os.environ.items() if k != "P2PCHAT_PASSPHRASE"}

    def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "p2pchat", "pad", "--data-dir", str(data_dir), *args],
                              capture_output=True, text=True, timeout=60, env=env,
                              cwd=Path(__file__).resolve().parents[2])

    bob_fp = identities[1].fingerprint.hex()
    made = run(alice_dir, "new", bob_fp, "--size", "8k", "--out", str(usb))
    assert made.returncode == 0, made.stderr
    assert "4,096 bytes each way" in made.stdout
    assert run(alice_dir, "import", str(usb / "mine")).returncode == 0
    imported = run(bob_dir, "import", str(usb / "peer"))
    assert imported.returncode == 0 and "imported pad" in imported.stdout
    again = run(bob_dir, "import", str(usb / "peer"))
    assert again.returncode == 1 and "already imported" in again.stderr
    status = run(alice_dir, "status", bob_fp)
    assert status.returncode == 0 and "4,064 bytes left to send, 4,096 bytes left to receive" in status.stdout
