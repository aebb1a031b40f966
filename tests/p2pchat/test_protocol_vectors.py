"""docs/protocol.md's test vectors, recomputed two ways: by an independent re-implementation of the byte layouts
the document specifies (struct, hashlib, hmac, msgpack), and by the project's own code. A change to the spec, the
vectors or the code that makes them disagree fails here."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from p2pchat import chat_protocol as cp
from p2pchat import handshake as hs
from p2pchat.channel import Channel, Text, ratchet
from p2pchat.foundation import crypto
from p2pchat.safety import half_number, safety_number_from_fingerprints
from tests.p2pchat.handshake_pair import Pair

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def load_vectors() -> dict[str, dict[str, str]]:
    """Blocks fenced as ```vector NAME; ``key = value`` lines, indented lines continue the value; quoted
    values are JSON strings."""
    blocks: dict[str, dict[str, str]] = {}
    for name, body in re.findall(r"^```vector ([\w-]+)\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S):
        values: dict[str, str] = {}
        key = None
        for line in body.splitlines():
            if line.startswith((" ", "\t")) and key is not None:
                values[key] += line.strip()
            elif line.strip() and not line.startswith("#"):
                key, _, value = line.partition(" = ")
                values[key] = value.strip()
        blocks[name] = {k: json.loads(v) if v.startswith('"') else v for k, v in values.items()}
    return blocks


V = load_vectors()


def hx(block: str, key: str) -> bytes:
    return bytes.fromhex(V[block][key])


# --- independent re-implementations of docs/protocol.md -------------------------------------------------------------

def spec_transcript(items: list[tuple[str, bytes]]) -> bytes:
    out = b"p2pchat/chat-transcript/v1"
    for label, value in items:
        out += bytes([len(label)]) + label.encode() + struct.pack(">I", len(value)) + value
    return out


def spec_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
        i += 1
    return okm[:length]


def spec_signed_hash(context: str, data: bytes) -> bytes:
    return hashlib.sha256(b"p2pchat/" + context.encode() + b"\x00" + data).digest()


def spec_aad(session: bytes, direction: bytes, epoch: int, counter: int) -> bytes:
    return b"p2pchat/sealed/v1\x00" + session + direction + struct.pack(">IQ", epoch, counter)


def spec_pad(body: bytes) -> bytes:
    n = 4 + len(body)
    size = next((b for b in (256, 1024, 4096, 16384, 65536) if n <= b), -(-n // 65536) * 65536)
    return struct.pack(">I", len(body)) + body + bytes(size - n)


def hello_items(prefix: str, nickname: str, address: str) -> list[tuple[str, bytes]]:
    t = V["transcript"]
    return [(f"{prefix}.version", struct.pack(">I", int(t["version"]))), (f"{prefix}.network", t["network"].encode()),
            (f"{prefix}.nickname", nickname.encode()), (f"{prefix}.address", address.encode())]


def vector_items() -> list[list[tuple[str, bytes]]]:
    """The items of step 1, then of step 2 (§3.5)."""
    t = V["transcript"]
    return [
        hello_items("i", t["i.nickname"], t["i.address"]) + hello_items("r", t["r.nickname"], t["r.address"]),
        [("i.key", hx("transcript", "i.key")), ("r.key", hx("transcript", "r.key")),
         ("i.challenge", hx("transcript", "i.challenge")), ("r.challenge", hx("transcript", "r.challenge")),
         ("i.ephemeral", hx("transcript", "i.ephemeral")), ("r.ephemeral", hx("transcript", "r.ephemeral")),
         *position_items("i"), *position_items("r")],
    ]


def position_items(prefix: str) -> list[tuple[str, bytes]]:
    """The ledger cross-check's four items of one side (§3.2, §3.5): heights as u32, hashes as they are."""
    t = V["transcript"]
    return [(f"{prefix}.final_height", struct.pack(">I", int(t[f"{prefix}.final_height"]))),
            (f"{prefix}.final_hash", hx("transcript", f"{prefix}.final_hash")),
            (f"{prefix}.tip_height", struct.pack(">I", int(t[f"{prefix}.tip_height"]))),
            (f"{prefix}.tip_hash", hx("transcript", f"{prefix}.tip_hash"))]


def vector_position(prefix: str) -> hs.ChainPosition:
    t = V["transcript"]
    return hs.ChainPosition(int(t[f"{prefix}.final_height"]), hx("transcript", f"{prefix}.final_hash"),
                            int(t[f"{prefix}.tip_height"]), hx("transcript", f"{prefix}.tip_hash"))


# --- the vectors ---------------------------------------------------------------------------------------------------

def test_every_vector_block_of_the_document_is_checked():
    assert set(V) == {"transcript", "signed-messages", "key-schedule", "sealed-text", "rotation", "rotation-overlap",
                      "frames-and-safety", "file-messages", "smp"} | {"pad-text"}   # pad-text: test_pad.py


def test_transcript_vector_matches_the_spec_and_the_code():
    groups = vector_items()
    items: list[tuple[str, bytes]] = []
    for n, group in enumerate(groups, start=1):
        items += group
        assert hashlib.sha256(spec_transcript(items)).hexdigest() == V["transcript"][f"T{n}"]
    assert spec_transcript(groups[0]).hex() == V["transcript"]["T1_encoding"]
    assert spec_transcript(items).hex() == V["transcript"]["T2_encoding"]

    t = V["transcript"]
    transcript = cp.Transcript()
    hs.add_hellos(transcript, hs.Hello(int(t["version"]), t["network"], t["i.nickname"], t["i.address"]),
                  hs.Hello(int(t["version"]), t["network"], t["r.nickname"], t["r.address"]))
    assert transcript.encoded().hex() == t["T1_encoding"]
    hs.add_step_2(transcript, i_key=hx("transcript", "i.key"), r_key=hx("transcript", "r.key"),
                  i_nonce=hx("transcript", "i.challenge"), r_nonce=hx("transcript", "r.challenge"),
                  i_ephemeral=hx("transcript", "i.ephemeral"), r_ephemeral=hx("transcript", "r.ephemeral"),
                  i_position=vector_position("i"), r_position=vector_position("r"))
    assert transcript.encoded().hex() == t["T2_encoding"]
    assert transcript.digest().hex() == t["T2"]


def features_items() -> list[tuple[str, bytes]]:
    """§3.5: ``i.features``, ``r.features``, each ``u8 len | name`` per name (here both sides send one name)."""
    name = V["transcript"]["features"].encode()
    return [("i.features", bytes([len(name)]) + name), ("r.features", bytes([len(name)]) + name)]


def test_transcript_with_features_on_both_sides_adds_two_items_after_step_1():
    t = V["transcript"]
    step1, step2 = vector_items()
    assert spec_transcript(features_items())[len(cp.TRANSCRIPT_LABEL):].hex() == t["features_items"]
    assert hashlib.sha256(spec_transcript(step1 + features_items())).hexdigest() == t["T1_features"]
    assert hashlib.sha256(spec_transcript(step1 + features_items() + step2)).hexdigest() == t["T2_features"]
    assert t["features"] == cp.FEATURE_FILE_ROOT and cp.FEATURES == (cp.FEATURE_FILE_ROOT,)

    def hello(side: str, features: tuple[str, ...] | None) -> hs.Hello:
        return hs.Hello(int(t["version"]), t["network"], t[f"{side}.nickname"], t[f"{side}.address"], features)

    both = cp.Transcript()
    hs.add_hellos(both, hello("i", cp.FEATURES), hello("r", cp.FEATURES))
    assert both.digest().hex() == t["T1_features"]
    # one side without the field (a node built before it): neither item, the plain T1 — whichever side it is
    for i_features, r_features in ((cp.FEATURES, None), (None, cp.FEATURES), (None, None)):
        one = cp.Transcript()
        hs.add_hellos(one, hello("i", i_features), hello("r", r_features))
        assert one.digest().hex() == t["T1"]
    empty = cp.Transcript()            # an empty list is a field that is there: two empty items
    hs.add_hellos(empty, hello("i", ()), hello("r", cp.FEATURES))
    assert empty.labels[-2:] == ["i.features", "r.features"] and empty.digest().hex() != t["T1"]


def test_ephemeral_publics_and_shared_secret_follow_from_the_private_keys():
    i = crypto.EphemeralKey(hx("transcript", "i.ephemeral_private"))
    r = crypto.EphemeralKey(hx("transcript", "r.ephemeral_private"))
    assert i.public.hex() == V["transcript"]["i.ephemeral"] and r.public.hex() == V["transcript"]["r.ephemeral"]
    assert i.agree(r.public).hex() == r.agree(i.public).hex() == V["key-schedule"]["shared"]


def test_signed_message_hashes():
    """The one signature per side (step 3) covers T2, which already holds both X25519 halves."""
    t2, s = hx("transcript", "T2"), V["signed-messages"]
    assert set(s) == {"i.ledgers", "r.ledgers", "auth_initiator", "auth_responder"}
    i_data = b"initiator\x00" + t2 + b"\x00" + s["i.ledgers"].encode()
    r_data = b"responder\x00" + t2 + b"\x00" + s["r.ledgers"].encode()
    assert spec_signed_hash("chat-auth", i_data).hex() == s["auth_initiator"]
    assert spec_signed_hash("chat-auth", r_data).hex() == s["auth_responder"]
    assert hs.auth_message(hs.ROLE_INITIATOR, t2, s["i.ledgers"]) == i_data
    assert hs.auth_message(hs.ROLE_RESPONDER, t2, s["r.ledgers"]) == r_data
    assert hs.AUTH_CONTEXT == "chat-auth"
    assert crypto._signed_message("chat-auth", r_data).hexdigest() == s["auth_responder"]


def test_key_schedule_and_confirmation_tags():
    k, t4 = V["key-schedule"], hx("transcript", "T2")
    okm = spec_hkdf(bytes.fromhex(k["shared"]), t4, b"p2pchat/chat-keys/v1", 160)
    names = ["i2r_key", "r2i_key", "i2r_chain", "r2i_chain", "confirm_key"]
    assert [okm[32 * n:32 * n + 32].hex() for n in range(5)] == [k[name] for name in names]
    ours = hs.derive_session_keys(bytes.fromhex(k["shared"]), t4)
    assert [getattr(ours, name).hex() for name in names] == [k[name] for name in names]
    ck = bytes.fromhex(k["confirm_key"])
    for role in ("initiator", "responder"):
        tag = hmac.new(ck, role.encode() + b"\x00" + t4, hashlib.sha256).hexdigest()
        assert tag == k[f"confirm_{role}"] == hs.confirm_tag(ck, role.encode(), t4).hex()
        type_ = "confirm" if role == "initiator" else "confirm_reply"      # step 4's two frames
        body = msgpack.packb({"t": type_, "confirm": bytes.fromhex(tag)}, use_bin_type=True)
        assert (struct.pack(">I", len(body)) + body).hex() == k[f"{type_}_frame"]
        assert cp.CHAT.encode(type_, confirm=bytes.fromhex(tag)).hex() == k[f"{type_}_frame"]


def test_sealed_text_frame():
    s, t4 = V["sealed-text"], hx("transcript", "T2")
    key = hx("key-schedule", "i2r_key")
    inner = bytes.fromhex(s["inner"])
    assert msgpack.unpackb(inner) == {"t": "text", "id": 1, "sent_at": float(s["sent_at"]), "text": s["text"]}
    assert cp.SEALED_CONTENT.encode_body("text", id=1, sent_at=float(s["sent_at"]), text=s["text"]) == inner
    padded = spec_pad(inner)
    assert len(padded) == int(s["padded_length"]) and cp.pad(inner) == padded
    nonce, aad = bytes(4) + struct.pack(">Q", 0), spec_aad(t4, b"i2r", 0, 0)
    assert nonce.hex() == s["nonce"] and aad.hex() == s["aad"]
    assert cp.sealed_nonce(0) == nonce and cp.sealed_aad(t4, b"i2r", 0, 0) == aad
    box = bytes.fromhex(s["box"])
    assert crypto.open_sealed(key, nonce, box, aad) == padded
    assert crypto.seal(key, nonce, padded, aad) == box
    body = msgpack.packb({"t": "sealed", "epoch": 0, "counter": 0, "box": box}, use_bin_type=True)
    assert (struct.pack(">I", len(body)) + body).hex() == s["frame"]


def _vector_established(initiator: bool) -> hs.Established:
    k = {name: hx("key-schedule", name) for name in ("i2r_key", "r2i_key", "i2r_chain", "r2i_chain")}
    mine, theirs = ("i2r", "r2i") if initiator else ("r2i", "i2r")
    binding = hs.LedgerBinding(b"der", "peer", None, None, None, 0, 0)
    return hs.Established(initiator, k[f"{mine}_key"], k[f"{theirs}_key"], k[f"{mine}_chain"], k[f"{theirs}_chain"],
                          hx("transcript", "T2"), b"der", "peer", binding, "0000 0000 0000")


def test_the_channel_produces_and_reads_the_vector_frame():
    s = V["sealed-text"]
    alice = Channel(_vector_established(True))
    msg_id, frames = alice.send_text(s["text"], float(s["sent_at"]))
    assert msg_id == 1 and frames[0].hex() == s["frame"]
    bob = Channel(_vector_established(False))
    events = bob.receive(cp.CHAT.decode(bytes.fromhex(s["frame"])[4:]))
    assert events[0] == Text(1, s["text"], float(s["sent_at"]))


def test_rotation_ratchet():
    r = V["rotation"]
    sender = crypto.EphemeralKey(hx("rotation", "sender_private"))
    receiver = crypto.EphemeralKey(hx("rotation", "receiver_private"))
    assert sender.public.hex() == r["sender_public"] and receiver.public.hex() == r["receiver_public"]
    shared = sender.agree(receiver.public)
    assert shared.hex() == r["shared"] == receiver.agree(sender.public).hex()
    okm = spec_hkdf(shared, hx("key-schedule", "i2r_chain"), b"p2pchat/chat-ratchet/v1i2r" + struct.pack(">I", 1), 64)
    assert okm[:32].hex() == r["key_1"] and okm[32:].hex() == r["chain_1"]
    assert ratchet(shared, hx("key-schedule", "i2r_chain"), b"i2r", 1) == (okm[:32], okm[32:])
    assert cp.SEALED_CONTENT.encode_body("rotate", epoch=1, pub=sender.public).hex() == r["rotate_inner"]
    assert msgpack.unpackb(bytes.fromhex(r["rotate_inner"])) == {"t": "rotate", "epoch": 1, "pub": sender.public}


def test_rotation_vector_through_two_channels():
    """The channels, with the vector's rotation keys injected, rotate to exactly key_1."""
    r = V["rotation"]
    alice = Channel(_vector_established(True), rotate_every=1,
                    ephemeral_factory=lambda: crypto.EphemeralKey(hx("rotation", "sender_private")))
    bob = Channel(_vector_established(False), rotate_every=1,
                  ephemeral_factory=lambda: crypto.EphemeralKey(hx("rotation", "receiver_private")))
    _, frames = alice.send_text("rotate after this", 1.0)
    answers = [e for f in frames for e in bob.receive(cp.CHAT.decode(f[4:]))]
    for ev in answers:
        if isinstance(ev, cp.Send):
            alice.receive(cp.CHAT.decode(ev.frame[4:]))
    assert alice.epoch == 1 and alice._send.key.hex() == r["key_1"] and alice._send.chain.hex() == r["chain_1"]
    assert bob._recv.next_key.hex() == r["key_1"]


def spec_text_frame(key: bytes, epoch: int, counter: int, msg_id: int, text: str, sent_at: float) -> bytes:
    """A sealed ``text`` frame from the initiator, built from the document's layouts alone (§5.1, §5.3, §5.4)."""
    inner = msgpack.packb({"t": "text", "id": msg_id, "sent_at": sent_at, "text": text}, use_bin_type=True)
    aad = spec_aad(hx("transcript", "T2"), b"i2r", epoch, counter)
    box = crypto.seal(key, bytes(4) + struct.pack(">Q", counter), spec_pad(inner), aad)
    body = msgpack.packb({"t": "sealed", "epoch": epoch, "counter": counter, "box": box}, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def test_rotation_overlap_frames_follow_from_the_spec():
    o = V["rotation-overlap"]
    sent_at, t2 = float(o["sent_at"]), hx("transcript", "T2")
    assert spec_aad(t2, b"i2r", 0, int(o["overlap_counter"])).hex() == o["overlap_aad"]
    assert spec_aad(t2, b"i2r", 1, int(o["switch_counter"])).hex() == o["switch_aad"]
    overlap = spec_text_frame(hx("key-schedule", "i2r_key"), 0, int(o["overlap_counter"]), 2, o["overlap_text"],
                              sent_at)
    switch = spec_text_frame(hx("rotation", "key_1"), 1, int(o["switch_counter"]), 3, o["switch_text"], sent_at)
    assert overlap.hex() == o["overlap_frame"] and switch.hex() == o["switch_frame"]


def test_rotation_overlap_through_two_channels():
    """Alice goes on under epoch 0 while her rotate_ack travels, then switches; bob accepts epoch 0 up to the
    switch counter and erases its key there; the overlap frame replayed afterwards is refused."""
    o = V["rotation-overlap"]
    sent_at = float(o["sent_at"])
    alice = Channel(_vector_established(True), rotate_every=int(o["rotate_every"]),
                    ephemeral_factory=lambda: crypto.EphemeralKey(hx("rotation", "sender_private")))
    bob = Channel(_vector_established(False), rotate_every=int(o["rotate_every"]), max_refused=10,
                  ephemeral_factory=lambda: crypto.EphemeralKey(hx("rotation", "receiver_private")))
    _, first = alice.send_text("rotate after this", sent_at)           # counters 0 (text) and 1 (rotate)
    _, (overlap,) = alice.send_text(o["overlap_text"], sent_at)        # no ack yet: still epoch 0
    assert overlap.hex() == o["overlap_frame"]
    answers = [e for f in first for e in bob.receive(cp.CHAT.decode(f[4:]))]
    for ev in answers:
        if isinstance(ev, cp.Send):
            alice.receive(cp.CHAT.decode(ev.frame[4:]))
    _, (switch, *_rotate_to_2) = alice.send_text(o["switch_text"], sent_at)
    assert switch.hex() == o["switch_frame"]
    assert [e.text for e in bob.receive(cp.CHAT.decode(overlap[4:])) if isinstance(e, Text)] == [o["overlap_text"]]
    assert bob._recv.key == hx("key-schedule", "i2r_key")
    assert [e.text for e in bob.receive(cp.CHAT.decode(switch[4:])) if isinstance(e, Text)] == [o["switch_text"]]
    assert bob.recv_epoch == 1 and bob._recv.key.hex() == V["rotation"]["key_1"]
    replay = bob.receive(cp.CHAT.decode(overlap[4:]))
    assert [type(e).__name__ for e in replay] == ["Refused"] and replay[0].kind == "replayed"


def test_hello_and_key_frames_and_safety_number():
    t, f = V["transcript"], V["frames-and-safety"]
    fields = {"version": int(t["version"]), "network": t["network"], "nickname": t["i.nickname"],
              "address": t["i.address"]}
    assert cp.CHAT.encode("hello", **fields).hex() == f["hello_frame"]
    body = msgpack.packb({"t": "hello", **fields}, use_bin_type=True)
    assert (struct.pack(">I", len(body)) + body).hex() == f["hello_frame"]
    # this version's hello: the same fields, then features (a msgpack array of texts)
    with_features = {**fields, "features": [t["features"]]}
    body = msgpack.packb({"t": "hello", **with_features}, use_bin_type=True)
    assert (struct.pack(">I", len(body)) + body).hex() == f["hello_features_frame"]
    assert cp.CHAT.encode("hello", **with_features).hex() == f["hello_features_frame"]
    me = hs.Hello(int(t["version"]), t["network"], t["i.nickname"], t["i.address"], cp.FEATURES)
    assert cp.CHAT.encode("hello", **me.wire()).hex() == f["hello_features_frame"]
    assert hs.Hello.from_message(cp.CHAT.decode(bytes.fromhex(f["hello_features_frame"])[4:])) == me
    assert hs.Hello.from_message(cp.CHAT.decode(bytes.fromhex(f["hello_frame"])[4:])).features is None
    # step 2's `key` frame carries the key, the sender's challenge and its X25519 half; the key's fingerprint is
    # the i.key item
    der, nonce, half = f["key_der"].encode(), hx("transcript", "i.challenge"), hx("transcript", "i.ephemeral")
    assert hashlib.sha256(der).hexdigest() == t["i.key"]
    pos = vector_position("i")
    ledger = {"final_height": pos.final_height, "final_hash": pos.final_hash, "tip_height": pos.tip_height,
              "tip_hash": pos.tip_hash}
    body = msgpack.packb({"t": "key", "key": der, "nonce": nonce, "ephemeral": half, **ledger}, use_bin_type=True)
    assert (struct.pack(">I", len(body)) + body).hex() == f["key_frame"]
    assert cp.CHAT.encode("key", key=der, nonce=nonce, ephemeral=half, **ledger).hex() == f["key_frame"]
    for type_ in ("key_ok", "auth_ok"):
        body = msgpack.packb({"t": type_}, use_bin_type=True)
        assert (struct.pack(">I", len(body)) + body).hex() == f[f"{type_}_frame"] == cp.CHAT.encode(type_).hex()
    sig = bytes(range(256)) + bytes(range(128))                        # any 384 bytes stand for an RSA-3072 one
    for type_ in ("auth", "auth_reply"):
        verdict = V["signed-messages"]["i.ledgers" if type_ == "auth" else "r.ledgers"]
        body = msgpack.packb({"t": type_, "ledgers": verdict, "sig": sig}, use_bin_type=True)
        expected = bytes.fromhex(f[f"{type_}_frame_before_signature"]) + sig
        assert struct.pack(">I", len(body)) + body == expected == cp.CHAT.encode(type_, sig=sig, ledgers=verdict)
    fp_a, fp_b = hx("transcript", "i.key"), hx("transcript", "r.key")
    halves = []
    for fp in (fp_a, fp_b):                 # written out from §4, independent of p2pchat/safety.py
        h = hashlib.sha256(b"p2pchat/safety-number/v2\x00" + fp).digest()
        for _ in range(5199):
            h = hashlib.sha256(h + fp).digest()
        halves.append("".join(f"{int.from_bytes(h[5 * i:5 * i + 5], 'big') % 100000:05d}" for i in range(6)))
    assert halves == [f["safety_half_i"], f["safety_half_r"]]
    assert [half_number(fp_a), half_number(fp_b)] == halves
    digits = "".join(sorted(halves))
    assert " ".join(digits[i:i + 5] for i in range(0, 60, 5)) == f["safety_number"]
    assert safety_number_from_fingerprints(fp_b, fp_a) == f["safety_number"]


# --- the state machine follows the same spec ---------------------------------------------------------------------

def test_a_real_handshake_derives_what_the_spec_says(identities):
    a, b = identities[:2]
    drawn: dict[str, list[bytes]] = {"i": [], "r": []}

    def recording(who: str, fill: int) -> Any:
        def rng(n: int) -> bytes:
            drawn[who].append(bytes([fill]) * n)
            return drawn[who][-1]
        return rng

    i_priv, r_priv = hx("transcript", "i.ephemeral_private"), hx("transcript", "r.ephemeral_private")
    pair = Pair(a, b, rng_i=recording("i", 0x11), rng_r=recording("r", 0x22),
                eph_i=lambda: crypto.EphemeralKey(i_priv), eph_r=lambda: crypto.EphemeralKey(r_priv)).run()
    est_i, est_r = pair.i.established, pair.r.established
    assert est_i is not None and est_r is not None

    items = (hello_items("i", "alice", "127.0.0.2:8471") + hello_items("r", "bob", "127.0.0.3:8471"))
    items = [(label, b"testnet" if label.endswith(".network") else value) for label, value in items]
    items += features_items()       # both sides of this version send features (§3.1)
    items += [("i.key", hashlib.sha256(a.public_der).digest()), ("r.key", hashlib.sha256(b.public_der).digest()),
              ("i.challenge", drawn["i"][0]), ("r.challenge", drawn["r"][0]),
              ("i.ephemeral", hx("transcript", "i.ephemeral")), ("r.ephemeral", hx("transcript", "r.ephemeral"))]
    # neither side has a ledger view here: both send the all-zero position and judge the other's "unknown"
    items += [(f"{side}.{name}", bytes(4) if name.endswith("height") else bytes(32))
              for side in "ir" for name in ("final_height", "final_hash", "tip_height", "tip_hash")]
    t4 = hashlib.sha256(spec_transcript(items)).digest()
    assert est_i.transcript_hash == est_r.transcript_hash == t4
    assert est_i.peer_features == est_r.peer_features == frozenset(cp.FEATURES)
    # the challenges and the X25519 halves are those of the two `key` frames (§2, §3.2)
    keys = {name: cp.CHAT.decode(f[4:]) for name, f in pair.log if cp.CHAT.decode(f[4:]).type == "key"}
    assert (keys["initiator"]["nonce"], keys["responder"]["nonce"]) == (drawn["i"][0], drawn["r"][0])
    assert (keys["initiator"]["ephemeral"].hex(), keys["responder"]["ephemeral"].hex()) == \
        (V["transcript"]["i.ephemeral"], V["transcript"]["r.ephemeral"])
    assert [cp.CHAT.decode(f[4:]).type for _, f in pair.log] == [
        "hello", "welcome", "key", "key", "key_ok", "key_ok", "auth", "auth_reply", "auth_ok", "confirm",
        "confirm_reply"]
    # one signature per side, over T2, each verifying under the signer's key
    sigs = {m.type: m["sig"] for m in (cp.CHAT.decode(f[4:]) for _, f in pair.log) if m.type.startswith("auth")
            and m.type != "auth_ok"}
    assert crypto.is_valid_signature(a.public_der, "chat-auth", b"initiator\x00" + t4 + b"\x00unknown", sigs["auth"])
    assert crypto.is_valid_signature(b.public_der, "chat-auth", b"responder\x00" + t4 + b"\x00unknown",
                                     sigs["auth_reply"])
    okm = spec_hkdf(hx("key-schedule", "shared"), t4, b"p2pchat/chat-keys/v1", 160)
    assert (est_i.send_key, est_i.recv_key, est_i.send_chain, est_i.recv_chain) == \
        (okm[0:32], okm[32:64], okm[64:96], okm[96:128])

    # and the first sealed frame follows §5.1
    _, frames = Channel(est_i).send_text("spec", 2.0)
    msg = cp.CHAT.decode(frames[0][4:])
    padded = crypto.open_sealed(okm[0:32], bytes(12), msg["box"], spec_aad(t4, b"i2r", 0, 0))
    (length,) = struct.unpack(">I", padded[:4])
    assert msgpack.unpackb(padded[4:4 + length]) == {"t": "text", "id": 1, "sent_at": 2.0, "text": "spec"}


@pytest.mark.parametrize("block", sorted(V))
def test_vector_values_are_well_formed(block):
    for key, value in V[block].items():
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]+", value) and len(value) > 16:
            assert len(value) % 2 == 0, f"{block}.{key} has an odd number of hex digits"


def test_file_message_vectors_match_msgpack_and_the_code():
    f = V["file-messages"]
    tid, content, sha = hx("file-messages", "id"), f["content"].encode(), hx("file-messages", "sha256")
    assert hashlib.sha256(content).digest() == sha
    fields = {
        "offer": {"id": tid, "name": "report.pdf", "size": len(content), "sha256": sha},
        "accept": {"id": tid, "offset": 0},
        "chunk": {"id": tid, "offset": 0, "data": content},
        "ack": {"id": tid, "offset": len(content)},
        "done": {"id": tid},
        "decline": {"id": tid, "reason": "no thanks"},
        "cancel": {"id": tid, "reason": "cancelled"},
    }
    for kind, values in fields.items():
        inner = hx("file-messages", f"{kind}_inner")
        assert msgpack.unpackb(inner) == {"t": f"file_{kind}", **values}
        assert msgpack.packb({"t": f"file_{kind}", **values}, use_bin_type=True) == inner
        assert cp.SEALED_CONTENT.encode_body(f"file_{kind}", **values) == inner
    full = msgpack.packb({"t": "file_chunk", "id": tid, "offset": 2**40, "data": bytes(262016)}, use_bin_type=True)
    assert len(full) == int(f["full_chunk_body_length"])
    assert len(spec_pad(full)) == int(f["full_chunk_padded_length"]) == 4 * 65536
    assert cp.BASE_CHUNK == 262016
    # this version's receiver announces the largest chunk it takes; the largest chunk pads to exactly 1 MiB
    accept_max = {"id": tid, "offset": 0, "max_chunk": cp.MAX_CHUNK}
    inner = hx("file-messages", "accept_max_inner")
    assert msgpack.unpackb(inner) == {"t": "file_accept", **accept_max}
    assert cp.SEALED_CONTENT.encode_body("file_accept", **accept_max) == inner
    largest = msgpack.packb({"t": "file_chunk", "id": tid, "offset": 2**40, "data": bytes(1048448)},
                            use_bin_type=True)
    assert len(largest) == int(f["largest_chunk_body_length"])
    assert len(spec_pad(largest)) == int(f["largest_chunk_padded_length"]) == 16 * 65536
    assert cp.MAX_CHUNK == 1048448
# --- the shared-secret check (§5.7) ----------------------------------------------------------------------------------

def smp_stream(seed: bytes) -> Any:
    """§7 smp's randomness: SHA-256(seed ‖ u32 0) ‖ SHA-256(seed ‖ u32 1) ‖ … read in order."""
    buf = bytearray()
    counter = iter(range(2**32))

    def rand(n: int) -> bytes:
        while len(buf) < n:
            buf.extend(hashlib.sha256(seed + struct.pack(">I", next(counter))).digest())
        out = bytes(buf[:n])
        del buf[:n]
        return out
    return rand


def test_smp_vector_matches_the_spec_and_the_code():
    import unicodedata

    from p2pchat import smp

    v = V["smp"]
    fa, fb, sid = (bytes.fromhex(v[k]) for k in ("fp_initiator", "fp_answerer", "session_id"))
    assert fa == hashlib.sha256(b"alice's public key").digest() and sid == hashlib.sha256(b"vector session").digest()
    question, answer_a, answer_b = v["question"], v["answer_initiator"], v["answer_answerer"]

    # the spec, re-implemented: the secret, the group, the first exponent and a proof checked with plain pow
    def spec_secret(answer: str) -> bytes:
        a = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", answer).strip().casefold()).encode()
        return hashlib.sha256(b"p2pchat/smp-secret/v1\x00" + fa + fb + sid + struct.pack(">I", len(a)) + a).digest()
    assert spec_secret(answer_a).hex() == v["x"] == spec_secret(answer_b).hex()
    p = smp.P
    assert p.bit_length() == 3072 and p >> 3008 == 2**64 - 1 and p % 2**64 == 2**64 - 1   # RFC 3526's shape
    q = (p - 1) // 2
    a2 = 1 + int.from_bytes(smp_stream(v["seed_initiator"].encode())(400), "big") % (q - 1)
    assert a2.to_bytes(384, "big")[:16].hex() == v["a2_head"]

    # the code, with the vector's randomness
    alice, m1 = smp.Smp.ask(fa, fb, sid, question, answer_a,
                            randfunc=smp_stream(v["seed_initiator"].encode()))
    g2a, c2, d2 = (int.from_bytes(m1.fields[k], "big") for k in ("g2a", "c2", "d2"))   # type: ignore[arg-type]
    assert g2a == pow(2, a2, p) and m1.fields["g2a"][:32].hex() == v["g2a_head"]       # type: ignore[index]
    commit = pow(2, d2, p) * pow(g2a, c2, p) % p
    assert hashlib.sha256(b"p2pchat/smp-proof/v1\x00\x01" + commit.to_bytes(384, "big")).digest() == m1.fields["c2"]
    bob = smp.Smp.asked(fb, fa, sid, m1.fields, randfunc=smp_stream(v["seed_answerer"].encode()))
    m2 = bob.answer(answer_b)[0]
    assert isinstance(m2, smp.Reply)
    m3 = alice.receive("smp2", m2.fields)[0]
    assert isinstance(m3, smp.Reply)
    out_b = bob.receive("smp3", m3.fields)
    m4 = out_b[0]
    assert isinstance(m4, smp.Reply)
    out_a = alice.receive("smp4", m4.fields)
    for m in (m1, m2, m3, m4):
        joined = b"".join(m.fields[k] for k in cp.SMP_FIELDS[m.kind])   # type: ignore[misc]
        assert hashlib.sha256(joined).hexdigest() == v[f"{m.kind}_sha256"], m.kind
    assert v["matched"] == "true" and out_a == [smp.Finished(True)] and out_b[1] == smp.Finished(True)
