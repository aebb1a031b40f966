"""docs/relay.md's vectors, recomputed by tests/spec/impl/relaylink.py."""

from __future__ import annotations

import re

from tests.spec.docvectors import DOCS, find
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl import relaylink as rl
from tests.spec.impl.wire import pack


def _doc() -> str:
    return (DOCS / "relay.md").read_text(encoding="utf-8")


def _hex_block_after(marker: str) -> bytes:
    text = _doc()
    start = text.index(marker)
    block = text[text.index("```", start) + 3:].split("```", 1)[0]
    return bytes.fromhex("".join(block.split()))


def test_link_handshake_vector_and_first_record():
    text = _doc()
    block = text[text.index("relay static private key = bytes 00..1f"):]
    block = block[block.index("```") + 3:].split("```", 1)[0]
    values = dict(re.findall(r"^(\w+)\s+([0-9a-f]{64})$", block, re.M))
    s_priv, c_priv, r_priv = (cc.x25519_private(bytes(range(a, a + 32))) for a in (0, 32, 64))
    s, e_c, e_r = (cc.x25519_public(k) for k in (s_priv, c_priv, r_priv))
    assert (s.hex(), e_c.hex(), e_r.hex()) == (values["s"], values["e_c"], values["e_r"])
    es, ee = cc.x25519(c_priv, s), cc.x25519(c_priv, e_r)
    assert es == cc.x25519(s_priv, e_c) and ee == cc.x25519(r_priv, e_c)
    assert (es.hex(), ee.hex()) == (values["es"], values["ee"])
    h, k_c2r, k_r2c = rl.link_keys(es, ee, s, e_c, e_r)
    assert (h.hex(), k_c2r.hex(), k_r2c.hex()) == (values["h"], values["k_c2r"], values["k_r2c"])
    first = find(r"record number 0\):\n(.*)", block, re.S)
    frame = pack("challenge", version=2, nonce=bytes(range(32)))
    assert len(frame) == 66
    assert rl.seal_record(k_r2c, 0, frame).hex() == "".join(first.split())


def test_pair_keys_pair_record_and_box_record_vectors():
    text = _doc()
    caller, callee = rl.pair_keys(bytes(range(32)))
    assert caller.hex() == find(r"`k_caller→callee = ([0-9a-f]{64})`", text)
    assert callee.hex() == find(r"`k_callee→caller = ([0-9a-f]{64})`", text)
    hello_record = find(r"carrying `hello` \(the 5 ASCII bytes[^)]*\) =\s*`([0-9a-f ]+)`", text)
    assert rl.seal_record(caller, 0, b"hello", rl.PAIR_BIT).hex() == hello_record.replace(" ", "")
    box = rl.seal_box_record(caller, 0, bytes(range(8)), bytes(range(0x80, 0xA0)))
    assert box == _hex_block_after("**Vector** (checked in `tests/p2pchat/relay/test_relay_box_records.py`)")


def test_login_proof_vector():
    data = rl.login_proof_data(bytes(range(32)), "127.0.0.9:8472", bytes(range(100, 132)), "p2pchat")
    assert data == _hex_block_after("Test vector (checked in `tests/p2pchat/relay/test_relay_units.py`)")
