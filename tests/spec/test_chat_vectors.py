"""docs/protocol.md §7's vectors, recomputed by the independent implementation in tests/spec/impl."""

from __future__ import annotations

import hashlib

import msgpack

from tests.spec.docvectors import vector, x
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl.wire import pack

DOC = "protocol.md"


def _transcript() -> tuple[dict, dict, dict, dict, bytes, bytes, dict[str, str]]:
    v = vector(DOC, "transcript")
    hello = {role: {"version": int(v["version"]), "network": v["network"], "nickname": v[f"{role}.nickname"],
                    "address": v[f"{role}.address"]} for role in ("i", "r")}
    key = {role: {"nonce": x(v[f"{role}.challenge"]), "ephemeral": x(v[f"{role}.ephemeral"]),
                  "final_height": int(v[f"{role}.final_height"]), "final_hash": x(v[f"{role}.final_hash"]),
                  "tip_height": int(v[f"{role}.tip_height"]), "tip_hash": x(v[f"{role}.tip_hash"])}
           for role in ("i", "r")}
    return hello["i"], hello["r"], key["i"], key["r"], x(v["i.key"]), x(v["r.key"]), v


def test_transcript_vector_t1_and_t2():
    ih, rh, ik, rk, ifp, rfp, v = _transcript()
    assert cc.x25519_public(cc.x25519_private(x(v["i.ephemeral_private"]))) == ik["ephemeral"]
    assert cc.x25519_public(cc.x25519_private(x(v["r.ephemeral_private"]))) == rk["ephemeral"]
    assert ifp == cc.H(b"alice's public key") and rfp == cc.H(b"bob's public key")
    assert cc.t1_encoding(ih, rh).hex() == v["T1_encoding"]
    assert cc.H(cc.t1_encoding(ih, rh)).hex() == v["T1"]
    encoding = cc.t2_encoding(ih, rh, ik, rk, ifp, rfp)
    assert encoding.hex() == v["T2_encoding"]
    assert cc.H(encoding).hex() == v["T2"]


def test_signed_messages_and_key_schedule_and_confirm_frames():
    *_, v = _transcript()
    t2 = x(v["T2"])
    s = vector(DOC, "signed-messages")
    for role, name, verdict in (("initiator", "auth_initiator", s["i.ledgers"]),
                                ("responder", "auth_responder", s["r.ledgers"])):
        message = cc.signed_message("chat-auth", cc.auth_data(role, t2, verdict))
        assert hashlib.sha256(message).hexdigest() == s[name]
    k = vector(DOC, "key-schedule")
    shared = cc.x25519(cc.x25519_private(x(v["i.ephemeral_private"])), x(v["r.ephemeral"]))
    assert shared == cc.x25519(cc.x25519_private(x(v["r.ephemeral_private"])), x(v["i.ephemeral"]))
    assert shared.hex() == k["shared"]
    keys = cc.key_schedule(shared, t2)
    for name in ("i2r_key", "r2i_key", "i2r_chain", "r2i_chain", "confirm_key"):
        assert getattr(keys, name).hex() == k[name], name
    tag_i, tag_r = cc.confirm_tag(keys.confirm_key, "initiator", t2), cc.confirm_tag(keys.confirm_key, "responder", t2)
    assert (tag_i.hex(), tag_r.hex()) == (k["confirm_initiator"], k["confirm_responder"])
    assert pack("confirm", confirm=tag_i).hex() == k["confirm_frame"]
    assert pack("confirm_reply", confirm=tag_r).hex() == k["confirm_reply_frame"]


def test_sealed_text_vector_and_its_padding():
    *_, v = _transcript()
    t2, keys = x(v["T2"]), vector(DOC, "key-schedule")
    s = vector(DOC, "sealed-text")
    body = cc.inner("text", id=1, sent_at=float(s["sent_at"]), text=s["text"])
    assert body.hex() == s["inner"]
    assert len(cc.pad(body)) == int(s["padded_length"])
    assert cc.nonce(0).hex() == s["nonce"]
    assert cc.sealed_aad(t2, "i2r", 0, 0).hex() == s["aad"]
    sender = cc.Sender(t2, "i2r", x(keys["i2r_key"]), x(keys["i2r_chain"]))
    frame = sender.seal(body)
    assert frame["box"].hex() == s["box"]
    assert pack("sealed", **frame).hex() == s["frame"]
    receiver = cc.Receiver(t2, "i2r", {0: x(keys["i2r_key"])}, x(keys["i2r_chain"]))
    assert receiver.open(frame) == {"t": "text", "id": 1, "sent_at": 1700000000.5, "text": s["text"]}
    assert receiver.open(frame) is None and receiver.refused == ["replayed or reordered counter 0"]


def test_rotation_and_overlap_vectors():
    *_, v = _transcript()
    t2, keys = x(v["T2"]), vector(DOC, "key-schedule")
    r = vector(DOC, "rotation")
    sender = cc.Sender(t2, "i2r", x(keys["i2r_key"]), x(keys["i2r_chain"]))
    receiver = cc.Receiver(t2, "i2r", {0: x(keys["i2r_key"])}, x(keys["i2r_chain"]))
    rotate = sender.start_rotation(x(r["sender_private"]))
    assert rotate.hex() == r["rotate_inner"]
    assert x25519_pub(r["receiver_private"]) == r["receiver_public"]
    shared = cc.x25519(cc.x25519_private(x(r["receiver_private"])), x(r["sender_public"]))
    assert shared.hex() == r["shared"]
    assert [h.hex() for h in cc.ratchet(shared, x(keys["i2r_chain"]), "i2r", 1)] == [r["key_1"], r["chain_1"]]

    o = vector(DOC, "rotation-overlap")
    sent_at = float(o["sent_at"])
    every = int(o["rotate_every"])
    assert every == 1
    frames = [sender.seal(cc.inner("text", id=1, sent_at=sent_at, text="rotate after this")), sender.seal(rotate)]
    opened = [receiver.open(frame) for frame in frames]
    assert opened[0] is not None and opened[1] is not None
    ack = receiver.answer_rotation(opened[1], x(r["receiver_private"]))
    overlap = sender.seal(cc.inner("text", id=2, sent_at=sent_at, text=o["overlap_text"]))
    assert overlap["counter"] == int(o["overlap_counter"])
    assert cc.sealed_aad(t2, "i2r", 0, overlap["counter"]).hex() == o["overlap_aad"]
    assert pack("sealed", **overlap).hex() == o["overlap_frame"]
    sender.finish_rotation(msgpack.unpackb(ack))
    switch = sender.seal(cc.inner("text", id=3, sent_at=sent_at, text=o["switch_text"]))
    assert (switch["epoch"], switch["counter"]) == (1, int(o["switch_counter"]))
    assert cc.sealed_aad(t2, "i2r", 1, 3).hex() == o["switch_aad"]
    assert pack("sealed", **switch).hex() == o["switch_frame"]
    assert (receiver.open(overlap) or {}).get("text") == o["overlap_text"]
    assert (receiver.open(switch) or {}).get("text") == o["switch_text"]
    assert list(receiver.keys) == [1]                        # i2r_key erased at the switch counter
    assert receiver.open(overlap) is None                    # replayed


def x25519_pub(private_hex: str) -> str:
    return cc.x25519_public(cc.x25519_private(x(private_hex))).hex()


def test_frames_and_safety_vector():
    ih, _rh, ik, _rk, ifp, rfp, _ = _transcript()
    f = vector(DOC, "frames-and-safety")
    assert pack("hello", **ih).hex() == f["hello_frame"]
    key_frame = pack("key", key=f["key_der"].encode(), **ik)
    assert key_frame.hex() == f["key_frame"]
    assert pack("key_ok").hex() == f["key_ok_frame"]
    assert pack("auth_ok").hex() == f["auth_ok_frame"]
    s = vector(DOC, "signed-messages")
    for t, verdict, name in (("auth", s["i.ledgers"], "auth_frame_before_signature"),
                             ("auth_reply", s["r.ledgers"], "auth_reply_frame_before_signature")):
        frame = pack(t, ledgers=verdict, sig=bytes(384))
        assert frame[:-384].hex() == f[name]
    assert cc.safety_half(ifp) == f["safety_half_i"] and cc.safety_half(rfp) == f["safety_half_r"]
    assert cc.safety_number(ifp, rfp) == f["safety_number"] == cc.safety_number(rfp, ifp)


def file_root(content: bytes) -> bytes:
    """§5.7 "The file's digest": the root over 1 MiB pieces."""
    piece = 1024 * 1024
    digests = b"".join(hashlib.sha256(content[i:i + piece]).digest() for i in range(0, len(content), piece))
    return hashlib.sha256(b"p2pchat/file-root/v1\x00" + len(content).to_bytes(8, "big") + digests).digest()


def test_file_message_vectors():
    f = vector(DOC, "file-messages")
    tid, content = x(f["id"]), f["content"].encode().decode("unicode_escape").encode()
    assert hashlib.sha256(content).hexdigest() == f["sha256"]
    size = len(content)
    assert cc.inner("file_offer", id=tid, name="report.pdf", size=size, sha256=x(f["sha256"])).hex() == f["offer_inner"]
    assert cc.inner("file_accept", id=tid, offset=0).hex() == f["accept_inner"]
    assert cc.inner("file_accept", id=tid, offset=0, max_chunk=1048448).hex() == f["accept_max_inner"]
    assert cc.inner("file_chunk", id=tid, offset=0, data=content).hex() == f["chunk_inner"]
    assert cc.inner("file_ack", id=tid, offset=size).hex() == f["ack_inner"]
    assert cc.inner("file_done", id=tid).hex() == f["done_inner"]
    assert cc.inner("file_decline", id=tid, reason="no thanks").hex() == f["decline_inner"]
    assert cc.inner("file_cancel", id=tid, reason="cancelled").hex() == f["cancel_inner"]
    assert file_root(content).hex() == f["root"]
    offer_root = cc.inner("file_offer", id=tid, name="report.pdf", size=size, root=x(f["root"]))
    assert offer_root.hex() == f["offer_root_inner"]
    assert cc.inner("file_accept", id=tid, offset=0, max_chunk=1048448, root=True).hex() == f["accept_root_inner"]
    assert file_root(b"").hex() == f["root_empty"]
    pieces = bytes(i % 251 for i in range(int(f["pieces_size"])))
    for n in range(3):
        assert hashlib.sha256(pieces[n * 1048576:(n + 1) * 1048576]).hexdigest() == f[f"pieces_piece{n}"]
    assert file_root(pieces).hex() == f["pieces_root"]
    for kind, length in (("full", 262016), ("largest", 1048448)):
        body = cc.inner("file_chunk", id=tid, offset=2**40, data=bytes(length))
        assert len(body) == int(f[f"{kind}_chunk_body_length"])
        assert len(cc.pad(body)) == int(f[f"{kind}_chunk_padded_length"])


def test_pad_text_vector():
    from Crypto.Hash import Poly1305
    p = vector(DOC, "pad-text")
    key, index, text = x(p["key"]), int(p["index"]), p["text"].encode()
    ciphertext = bytes(a ^ b for a, b in zip(text, x(p["keystream"]), strict=False))
    assert ciphertext.hex() == p["ciphertext"]
    r, s = key[:16], key[16:]
    mac = Poly1305.Poly1305_MAC(r, s, b"p2pchat/pad-text/v1\x00" + index.to_bytes(8, "big") + ciphertext)
    assert mac.hexdigest() == p["tag"]
    assert (index.to_bytes(8, "big") + ciphertext + mac.digest()).hex() == p["pad_frame"]
    assert cc.inner("pad_mode", op="on?", pad_id=bytes(16)).hex() == p["pad_mode_on_body"]


class SeededRandom:
    """§7 smp: SHA-256(seed ‖ u32 0) ‖ SHA-256(seed ‖ u32 1) ‖ …, read in order."""

    def __init__(self, seed: bytes) -> None:
        self.seed, self.block, self.buffer = seed, 0, b""

    def __call__(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += hashlib.sha256(self.seed + self.block.to_bytes(4, "big")).digest()
            self.block += 1
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def test_smp_vector():
    from tests.spec.impl import smp
    v = vector(DOC, "smp")
    P, G = smp.P, smp.G
    assert smp.in_group(2) and pow(2, smp.Q, P) == 1
    fp_i, fp_a, sid = x(v["fp_initiator"]), x(v["fp_answerer"]), x(v["session_id"])
    xa = smp.secret(fp_i, fp_a, sid, v["answer_initiator"])
    y = smp.secret(fp_i, fp_a, sid, v["answer_answerer"])
    assert f"{xa:064x}" == v["x"] and y == xa
    alice, bob = SeededRandom(v["seed_initiator"].encode()), SeededRandom(v["seed_answerer"].encode())
    # smp1 (Alice)
    a2, a3 = smp.exponent(alice), smp.exponent(alice)
    assert smp.enc(a2)[:16].hex() == v["a2_head"]
    g2a, g3a = pow(G, a2, P), pow(G, a3, P)
    assert smp.enc(g2a)[:32].hex() == v["g2a_head"]
    c2, d2 = smp.prove_knowledge(1, a2, smp.exponent(alice))
    c3, d3 = smp.prove_knowledge(2, a3, smp.exponent(alice))
    smp1 = [g2a, c2, d2, g3a, c3, d3]
    # smp2 (Bob)
    assert smp.check_knowledge(1, g2a, c2, d2) and smp.check_knowledge(2, g3a, c3, d3)
    b2, b3 = smp.exponent(bob), smp.exponent(bob)
    g2b, g3b = pow(G, b2, P), pow(G, b3, P)
    c2b, d2b = smp.prove_knowledge(3, b2, smp.exponent(bob))
    c3b, d3b = smp.prove_knowledge(4, b3, smp.exponent(bob))
    g2, g3 = pow(g2a, b2, P), pow(g3a, b3, P)
    r4, r5, r6 = smp.exponent(bob), smp.exponent(bob), smp.exponent(bob)
    pb, qb = pow(g3, r4, P), pow(G, r4, P) * pow(g2, y, P) % P
    cp = smp.proof_hash(5, pow(g3, r5, P), pow(G, r5, P) * pow(g2, r6, P) % P)
    d5, d6 = (r5 - r4 * cp) % smp.Q, (r6 - y * cp) % smp.Q
    smp2 = [g2b, c2b, d2b, g3b, c3b, d3b, pb, qb, cp, d5, d6]
    # smp3 (Alice)
    g2_a, g3_a = pow(g2b, a2, P), pow(g3b, a3, P)
    assert (g2_a, g3_a) == (g2, g3)
    r4a, r5a, r6a, r7a = (smp.exponent(alice) for _ in range(4))
    pa, qa = pow(g3, r4a, P), pow(G, r4a, P) * pow(g2, xa, P) % P
    cpa = smp.proof_hash(6, pow(g3, r5a, P), pow(G, r5a, P) * pow(g2, r6a, P) % P)
    d5a, d6a = (r5a - r4a * cpa) % smp.Q, (r6a - xa * cpa) % smp.Q
    base = qa * pow(qb, -1, P) % P
    ra = pow(base, a3, P)
    cr = smp.proof_hash(7, pow(G, r7a, P), pow(base, r7a, P))
    d7 = (r7a - a3 * cr) % smp.Q
    smp3 = [pa, qa, cpa, d5a, d6a, ra, cr, d7]
    # smp4 (Bob)
    r7 = smp.exponent(bob)
    rb = pow(base, b3, P)
    crb = smp.proof_hash(8, pow(G, r7, P), pow(base, r7, P))
    d7b = (r7 - b3 * crb) % smp.Q
    smp4 = [rb, crb, d7b]
    for name, fields, challenges in (("smp1", smp1, {1, 4}), ("smp2", smp2, {1, 4, 8}),
                                     ("smp3", smp3, {2, 6}), ("smp4", smp4, {1})):
        data = b"".join(f.to_bytes(32 if i in challenges else 384, "big") for i, f in enumerate(fields))
        assert hashlib.sha256(data).hexdigest() == v[f"{name}_sha256"], name
    matched_bob = pow(ra, b3, P) == pa * pow(pb, -1, P) % P
    matched_alice = pow(rb, a3, P) == pa * pow(pb, -1, P) % P
    assert matched_bob and matched_alice and v["matched"] == "true"
