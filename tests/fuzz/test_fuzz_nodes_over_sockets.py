"""Fuzzing the running handlers over real sockets: a ledger node, a chat node and a relay, each fed random and
mutated frames (before and after a valid opening) from a fresh loopback address per example. Each connection ends
with an answer or a clean close, no handler thread dies of an unexpected exception, the node keeps serving honest
clients afterwards, and ``close()`` leaves no thread behind."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.protocol import LEDGER_PROTOCOL, ROLE_CLIENT, ROLE_PEER, hello_fields
from p2pchat.chat_protocol import CHAT, PROTOCOL_VERSION
from p2pchat.events import StepResult
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import UserError
from p2pchat.relay.link import connect_link
from p2pchat.relay.protocol import DEFAULT_MAX_FRAME, relay_protocol
from p2pchat.relay.server import RelayServer
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.fuzz.fuzz_kit import bodies_for, framed, fuzz_settings, mutated
from tests.ledger.gossip_kit import PARAMS, Net, RawPeer, config
from tests.p2pchat.node_kit import connect_all, pair

RELAY = relay_protocol(DEFAULT_MAX_FRAME)


class ThreadErrors:
    """Collects exceptions that escape any thread (they would otherwise only be printed)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._old = threading.excepthook

    def __enter__(self) -> ThreadErrors:
        threading.excepthook = lambda args: self.errors.append(f"{args.thread}: {args.exc_type.__name__}: "
                                                               f"{args.exc_value}")
        return self

    def __exit__(self, *exc: object) -> None:
        threading.excepthook = self._old


def exchange(host: str, port: int, payload: bytes, *, opening: bytes = b"", read_first: bool = False,
             timeout: float = 5.0) -> bytes:
    """From a fresh loopback address: optionally read the server's first bytes, send ``opening`` and
    ``payload``, half-close, and read until the server closes (bounded by ``timeout``)."""
    sock = socket.socket()
    sock.bind((free_loopback_ip(), 0))
    sock.settimeout(timeout)
    got = b""
    try:
        sock.connect((host, port))
        if read_first:
            got += sock.recv(65536)
        try:
            sock.sendall(opening + payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass      # the server already closed on an earlier byte
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        raise AssertionError(f"the server neither answered nor closed within {timeout} s") from None
    except OSError:
        pass          # reset by the server: a close too
    finally:
        sock.close()
    return got


def frames_strategy(protocol: Any, samples: list[bytes]) -> st.SearchStrategy[bytes]:
    one = st.one_of(bodies_for(protocol).map(framed), st.sampled_from(samples).flatmap(mutated),
                    st.binary(max_size=64))
    return st.lists(one, min_size=1, max_size=3).map(b"".join)


# --- ledger node ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ledger_node(tmp_path_factory) -> Iterator[Any]:
    with Net(tmp_path_factory.mktemp("fuzz-ledger")) as net:
        node = net.node(config=config(mine=False, register=False))
        yield node


def ledger_opening(role: str) -> bytes:
    genesis = PARAMS.genesis()
    return LEDGER_PROTOCOL.encode("hello", **hello_fields(
        role=role, nonce=crypto.random_bytes(8), network=PARAMS.name, genesis=PARAMS.genesis_hash,
        params=PARAMS.to_wire(), height=0, tip=genesis.hash, work=0, listen_port=None))


LEDGER_SAMPLES = [LEDGER_PROTOCOL.encode("get_headers", locator=[PARAMS.genesis_hash], limit=10),
                  LEDGER_PROTOCOL.encode("lookup", by="nick", value="alice"),
                  LEDGER_PROTOCOL.encode("get_blocks", hashes=[PARAMS.genesis_hash]),
                  LEDGER_PROTOCOL.encode("ping", nonce=7)]


@fuzz_settings(100)
@given(payload=frames_strategy(LEDGER_PROTOCOL, LEDGER_SAMPLES),
       opening=st.sampled_from(["none", ROLE_CLIENT, ROLE_PEER]))
def test_a_ledger_node_fed_random_frames_answers_or_closes_and_keeps_serving(ledger_node, payload, opening):
    with ThreadErrors() as caught:
        exchange(ledger_node.host, ledger_node.port, payload,
                 opening=b"" if opening == "none" else ledger_opening(opening))
    assert caught.errors == []


def test_the_fuzzed_ledger_node_still_serves_a_client(ledger_node):
    client = RawPeer(ledger_node, role=ROLE_CLIENT)
    try:
        assert client.ack is not None and client.ack.type == "hello_ack"
        client.conn.send("status")
        assert client.recv_type("status_result").type == "status_result"
    finally:
        client.close()


# --- chat node -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat_pair() -> Iterator[Any]:
    with pair(make_identities(2), step_timeout=2.0) as (alice, bob, _directory):
        yield alice, bob


CHAT_SAMPLES = [CHAT.encode("hello", version=PROTOCOL_VERSION, network="p2pchat", nickname="fuzz",
                            address="127.0.0.9:8471"),
                CHAT.encode("key", key=make_identities(3)[2].public_der, nonce=bytes(32), ephemeral=bytes(32),
                            final_height=0, final_hash=bytes(32), tip_height=0, tip_hash=bytes(32)),
                CHAT.encode("sealed", epoch=0, counter=0, box=bytes(272))]


@fuzz_settings(100)
@given(payload=frames_strategy(CHAT, CHAT_SAMPLES), with_hello=st.booleans())
def test_a_chat_node_fed_random_frames_closes_that_connection_only(chat_pair, payload, with_hello):
    _, bob = chat_pair
    with ThreadErrors() as caught:
        exchange(bob.ip, bob.node.port, payload, opening=CHAT_SAMPLES[0] if with_hello else b"")
    assert caught.errors == []


def test_the_fuzzed_chat_node_still_completes_an_honest_chat(chat_pair):
    alice, bob = chat_pair
    sid, _ = connect_all(alice, bob)
    alice.node.end_session(sid)
    assert alice.log.all(StepResult, session=sid, ok=False) == []


# --- relay -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def relay() -> Iterator[RelayServer]:
    server = RelayServer(free_loopback_ip(), 0, login_timeout=2.0, pair_timeout=1.0).start()
    yield server
    server.close()


RELAY_SAMPLES = [RELAY.encode("login", version=2, network="p2pchat", role="call", key=make_identities(1)[0].public_der,
                              sig=bytes(384), peer=bytes(32)),
                 RELAY.encode("status", version=2), RELAY.encode("ping")]


def link_exchange(relay: RelayServer, payload: bytes) -> None:
    """Fuzzed bytes inside the encrypted link (where the relay parses frames): set up the link, send them sealed,
    half-close and read until the relay closes."""
    conn = connect_link((relay.host, relay.port), pin=relay.key.public, source_ip=free_loopback_ip(), timeout=5)
    try:
        conn.send_frame(payload)
        conn.sock.shutdown(socket.SHUT_WR)
        while True:
            conn.recv(timeout=5)
    except UserError:
        pass          # the relay refused and closed: what we wait for
    finally:
        conn.close()


@fuzz_settings(100)
@given(payload=frames_strategy(RELAY, RELAY_SAMPLES))
def test_a_relay_fed_random_frames_refuses_them_and_pairs_nobody(relay, payload):
    with ThreadErrors() as caught:
        exchange(relay.host, relay.port, payload, read_first=True)      # outside the link: refused at once
        link_exchange(relay, payload)
    assert caught.errors == []
    assert relay.sessions() == [] and relay.registered_count == 0


def test_the_fuzzed_relay_still_answers_its_status(relay):
    conn = connect_link((relay.host, relay.port), pin=relay.key.public, source_ip=free_loopback_ip(), timeout=5)
    try:
        assert conn.recv().type == "challenge"
        conn.send("status", version=2)
        assert conn.recv().type == "status_result"
    except UserError as exc:
        raise AssertionError(str(exc)) from None
    finally:
        conn.close()


def test_no_handshake_step_was_completed_by_fuzz_on_the_chat_node(chat_pair):
    _, bob = chat_pair
    # only the honest chat of the test above may have authenticated; no fuzzed connection got past step 2
    authenticated = {e.session for e in bob.log.all(StepResult, ok=True) if e.step >= Step.AUTHENTICATE}
    assert len(authenticated) <= 1, authenticated
