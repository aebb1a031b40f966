"""The encrypted client↔relay link: the documented vector (docs/relay.md), the handshake over real sockets, key
pinning and trust on first use, and records that are altered, oversized or from the wrong key."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Protocol
from p2pchat.foundation.errors import AddressError, FrameError
from p2pchat.foundation.transport import FramedSocket
from p2pchat.relay import RelayKey, parse_relay
from p2pchat.relay.protocol import CLIENT_PROTOCOL, relay_protocol
from p2pchat.relay.secure import (
    CLIENT_MAGIC,
    INTRO,
    LINK_VERSION,
    MAX_RECORD,
    RECORD_HEADER,
    RELAY_MAGIC,
    KnownRelays,
    PairKeys,
    RelayKeyMismatch,
    SecureSocket,
    client_handshake,
    server_handshake,
)
from tests.conftest import free_loopback_ip

VECTOR = {
    "s": "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f",
    "e_c": "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254",
    "e_r": "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a",
    "es": "9663aa1da97e848a914a436d04163dfbb89178f107f1b5b77ed3854203382854",
    "ee": "04c304fb1ca83cee75e206344231f33797e07d9929db670994b7c6fbeb1dc255",
    "h": "aefcede72a720120b0472bd14cb9c25c224973114c098420ed58a8d788c93d18",
    "k_c2r": "8baa114af7c7a7e9029fcf0a29f2bb63f5559c07a77da561d97453d008e7066e",
    "k_r2c": "ee5e5d9e852479e3d92cfc12525f8ae340f0603ced11ff272af21ad3569d4945",
    "relay_intro": "5032505202" "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f",
    "client_intro": "5032504302" "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254",
    "record": "00000052d7dc24cdae769d51b1b3711b3479a902a861d6eb133b55b350162d6022e45fdc391c589fb8fde34cd92e45ac70"
              "a931752c92e7c6b66b405484d3bff1239e35687a08bc61cf3799ac9f2367c62c1e3e28eb2e",
}


def test_the_documented_link_vector():
    relay = RelayKey(bytes(range(32)))
    client = crypto.EphemeralKey(bytes(range(32, 64)))
    relay_eph = crypto.EphemeralKey(bytes(range(64, 96)))
    assert relay.public.hex() == VECTOR["s"]
    assert client.public.hex() == VECTOR["e_c"] and relay_eph.public.hex() == VECTOR["e_r"]
    es, ee = client.agree(relay.public), client.agree(relay_eph.public)
    assert (es, ee) == (relay.agree(client.public), relay_eph.agree(client.public))
    assert es.hex() == VECTOR["es"] and ee.hex() == VECTOR["ee"]
    h = crypto.sha256(b"p2pchat/relay-link/2\x00", relay.public, client.public, relay_eph.public)
    assert h.hex() == VECTOR["h"]
    to_relay, to_client = crypto.relay_link_keys(relay.public, client.public, relay_eph.public, es, ee)
    assert to_relay.hex() == VECTOR["k_c2r"] and to_client.hex() == VECTOR["k_r2c"]
    assert INTRO.pack(RELAY_MAGIC, LINK_VERSION, relay.public).hex() == VECTOR["relay_intro"]
    assert INTRO.pack(CLIENT_MAGIC, LINK_VERSION, client.public).hex() == VECTOR["client_intro"]
    # The relay's first record: the challenge (version 2, nonce 00..1f) as record number 0 under k_r2c.
    frame = CLIENT_PROTOCOL.encode("challenge", version=2, nonce=bytes(range(32)))
    header = RECORD_HEADER.pack(len(frame) + 16)
    assert (header + crypto.seal(to_client, bytes(12), frame, header)).hex() == VECTOR["record"]
    assert crypto.gcm_counter_nonce(1) == bytes(11) + b"\x01"
    # A session's pair keys from pair_key = bytes 00..1f, and the caller's first pair record carrying "hello".
    to_callee, to_caller = crypto.relay_pair_keys(bytes(range(32)))
    assert to_callee.hex() == "fe9188ce621e5f85f0d7a17fd47459713609c6b6af94ae643d496112a43eb519"
    assert to_caller.hex() == "db7b1e1468282cf4caa8eeac4d84aa29f8b0717abfd90fe41e6fd78b49122b33"
    header = RECORD_HEADER.pack(0x80000000 | (5 + 16))
    assert (header + crypto.seal(to_callee, bytes(12), b"hello", header)).hex() == \
        "800000154cab7a46af85e93cd4ceb67a616b596da902a138c0"


class _Pair:
    """A connected TCP pair on loopback wrapped as framed sockets: a client side and a relay side."""

    def __init__(self, protocol: Protocol) -> None:
        with socket.create_server((free_loopback_ip(), 0)) as listener:
            a = socket.create_connection(listener.getsockname()[:2], timeout=5)
            b, _ = listener.accept()
        self.client = FramedSocket(a, protocol, timeout=5)
        self.relay = FramedSocket(b, protocol, timeout=5)

    def close(self) -> None:
        self.client.close()
        self.relay.close()


def _handshake(pin: bytes | None, known: KnownRelays | None, key: RelayKey) -> tuple[SecureSocket, SecureSocket]:
    pair = _Pair(relay_protocol())
    out: list[SecureSocket] = []
    t = threading.Thread(target=lambda: out.append(server_handshake(pair.relay, key, timeout=5)))
    t.start()
    try:
        client = client_handshake(pair.client, "127.0.0.9:8472", pin=pin, known=known, timeout=5)
    finally:
        t.join()
    return client, out[0]


def test_both_ends_of_a_real_link_exchange_frames_in_both_directions():
    key = RelayKey()
    client, relay = _handshake(key.public, None, key)
    client.send("ping")
    assert relay.recv().type == "ping"
    relay.send("error", reason="r" * 1000)
    assert client.recv()["reason"] == "r" * 1000
    assert client.relay_key == key.public
    # A session: pair records pass the relay's side unopened; the other client opens them.
    to_peer, from_peer = crypto.relay_pair_keys(bytes(32))
    client.set_pair_keys(to_peer, from_peer, 100_000)
    relay.forward_pair_records()
    client.send_pair(b"x" * 300_000)                  # three records of at most 100,000 bytes
    records = [relay.recv() for _ in range(3)]
    assert [m.type for m in records] == ["pair"] * 3
    assert [len(m["payload"]) for m in records] == [100_020, 100_020, 100_020]
    assert b"xxxx" not in b"".join(m["payload"] for m in records)
    assert crypto.relay_pair_keys(bytes(32))[0] == to_peer
    client.close()
    relay.close()


def test_a_pinned_key_refuses_another_relay_and_first_use_remembers_the_key_seen():
    real, impostor = RelayKey(), RelayKey()
    with pytest.raises(RelayKeyMismatch, match="not the key pinned"):
        _handshake(real.public, None, impostor)
    known = KnownRelays()
    client, relay = _handshake(None, known, real)
    client.close()
    relay.close()
    assert known.get("127.0.0.9:8472") == real.public
    with pytest.raises(RelayKeyMismatch, match="not the key it presented before"):
        _handshake(None, known, impostor)


def test_an_altered_record_and_an_oversized_record_header_end_the_link():
    key = RelayKey()
    client, relay = _handshake(key.public, None, key)
    sealed = bytearray(client._seal(CLIENT_PROTOCOL.encode("ping")))
    sealed[-1] ^= 1
    client.sock.sendall(sealed)
    with pytest.raises(FrameError, match="failed authentication"):
        relay.recv()
    client2, relay2 = _handshake(key.public, None, key)
    client2.sock.sendall(RECORD_HEADER.pack(MAX_RECORD + 1))
    with pytest.raises(FrameError, match="outside 17"):
        relay2.recv()
    for s in (client, relay, client2, relay2):
        s.close()


def test_relay_addresses_take_an_optional_key_pin():
    key = RelayKey().public
    assert parse_relay("127.0.0.9") == ("127.0.0.9", 8472, None)
    assert parse_relay(f"127.0.0.9:9000#{key.hex()}") == ("127.0.0.9", 9000, key)
    with pytest.raises(AddressError, match="64 hex digits"):
        parse_relay("127.0.0.9:9000#abcd")


def test_a_client_without_the_link_gets_nothing_from_the_relay_in_clear(env):
    relay = env.relay()
    raw = socket.create_connection((relay.host, relay.port), timeout=5)
    try:
        raw.sendall(b"\x00\x00\x00\x21" + bytes(33))      # a clear frame where the link intro belongs
        data = b""
        while chunk := raw.recv(4096):
            data += chunk
        assert data == INTRO.pack(RELAY_MAGIC, LINK_VERSION, relay.key.public)   # the relay's key, then closed
    finally:
        raw.close()
    assert relay.counters()["link_failures"] == 1


def test_the_relay_key_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "relay_key"
    first = RelayKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert RelayKey.load_or_create(path).public == first.public


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=300_000), min_size=1, max_size=12),
       sizes=st.lists(st.integers(min_value=1, max_value=600_000), min_size=1, max_size=5))
def test_records_cut_anywhere_by_the_network_open_in_order_on_a_client_and_pass_whole_on_the_relay(cuts, sizes):
    from p2pchat.relay.secure import PAIR_FLAG, _Opener, seal_records

    link_key, pair_key = bytes(range(32)), bytes(range(32, 64))
    payloads = [bytes([i]) * n for i, n in enumerate(sizes)]
    stream, wanted, records = bytearray(), [], []
    link_counter = pair_counter = 0
    for i, data in enumerate(payloads):
        if i % 2:   # alternately link records and pair records (each split at 256 KiB)
            sealed, count = seal_records(pair_key, pair_counter, data, PAIR_FLAG)
            pair_counter += count
            kind = "pair"
        else:
            sealed, count = seal_records(link_key, link_counter, data)
            link_counter += count
            kind = "link"
        stream += sealed
        at = 0
        for start in range(0, len(data), 256 * 1024):
            wanted.append((kind, data[start:start + 256 * 1024]))
            end = at + RECORD_HEADER.size + len(wanted[-1][1]) + 16
            records.append(bytes(sealed[at:end]))
            at = end
    client, relay = _Opener(link_key), _Opener(link_key)
    client.pair = PairKeys(pair_key, pair_key)
    relay.forward_pairs = True
    got_client, got_relay, at = [], [], 0
    for cut in [*cuts, len(stream)]:
        piece = bytes(stream[at:at + cut])
        at += len(piece)
        got_client += client.feed(piece)
        got_relay += relay.feed(piece)
    assert at == len(stream)
    assert got_client == wanted
    # the relay opens link records and hands pair records on unchanged, whole
    assert [c for c in got_relay if c[0] == "link"] == [w for w in wanted if w[0] == "link"]
    assert [c[1] for c in got_relay if c[0] == "pair"] == [r for r, w in zip(records, wanted, strict=True)
                                                           if w[0] == "pair"]


def test_a_pair_record_before_the_pair_keys_waits_and_opens_once_they_are_set():
    from p2pchat.relay.secure import PAIR_FLAG, _Opener, seal_records

    link_key, pair_key = bytes(32), bytes(range(32))
    link, _ = seal_records(link_key, 0, b"paired")
    pair, _ = seal_records(pair_key, 0, b"hello", PAIR_FLAG)
    opener = _Opener(link_key)
    assert opener.feed(bytes(link + pair[:3])) == [("link", b"paired")]
    assert opener.missing() == 0                        # the next record's header is not complete yet
    assert opener.feed(bytes(pair[3:6])) == [] and opener.missing() == len(pair) - 6     # what a read asks for
    assert opener.feed(bytes(pair[6:])) == []          # waits: no keys yet
    opener.pair = PairKeys(pair_key, pair_key)
    assert opener.feed(b"") == [("pair", b"hello")]
    with pytest.raises(FrameError, match="failed authentication"):
        opener.feed(bytes(seal_records(bytes(32), 1, b"x", PAIR_FLAG)[0]))
