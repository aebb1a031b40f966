import socket, struct, time, os, math, msgpack, dataclasses
from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import CHAT_PORT, NETWORK, connect_from, start_world
from tests.spec.impl.peer import MAX_FRAME, ChatPeer
from tests.spec.impl.wire import socket_stream, pack, SpecError
from tests.spec.impl import chatcrypto as cc

class Mut(ChatPeer):
    mutate: dict = {}
    def send(self, t, **fields):
        m = self.mutate.get(t)
        if m is not None:
            fields = m(dict(fields))
            if fields is None:
                return
        super().send(t, **fields)

def run(world, view, mutate):
    s = connect_from(world.spec_ip, world.host, CHAT_PORT)
    s.settimeout(5)
    p = Mut(world.key, "spec-peer", f"{world.spec_ip}:{CHAT_PORT}", view, s.sendall, socket_stream(s, MAX_FRAME), NETWORK)
    p.mutate = mutate
    try:
        p.initiate(world.host)
        return f"completed {p.log}"
    except (SpecError, OSError) as e:
        return f"{p.log[-1:] } {e}"
    finally:
        s.close()

def test_probe(tmp_path):
    world = start_world(tmp_path)
    with world.cluster:
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            view = world.ledger_view()
            cases = {
                "final>tip": {"key": lambda f: {**f, "final_height": 5, "tip_height": 4}},
                "nonce 31": {"key": lambda f: {**f, "nonce": f["nonce"][:31]}},
                "key height 2^32": {"key": lambda f: {**f, "tip_height": 2**32}},
                "zero ephemeral": {"key": lambda f: {**f, "ephemeral": bytes(32)}},
                "ledgers maybe": {"auth": lambda f: {**f, "ledgers": "maybe"}},
                "ledgers empty": {"auth": lambda f: {**f, "ledgers": ""}},
                "bad sig": {"auth": lambda f: {**f, "sig": os.urandom(384)}},
                "confirm wrong": {"confirm": lambda f: {**f, "confirm": os.urandom(32)}},
                "no key_ok": {"key_ok": lambda f: None},
                "claimed conflict": {"auth": lambda f: f},
                "welcome-ish hello nick": {"hello": lambda f: {**f, "nickname": ""}},
                "address v4 in brackets": {"hello": lambda f: {**f, "address": "[127.0.0.1]:8471"}},
                "address spaces": {"hello": lambda f: {**f, "address": " 127.0.0.1:8471"}},
                "address arabic digits": {"hello": lambda f: {**f, "address": "127.0.0.1:\u0668\u0660"}},
                "address leading zero port": {"hello": lambda f: {**f, "address": "127.0.0.1:08471"}},
                "address v6 upper": {"hello": lambda f: {**f, "address": "[::FFFF:7F00:1]:8471"}},
                "address no port": {"hello": lambda f: {**f, "address": "127.0.0.1"}},
            }
            for name, m in cases.items():
                print(f"{name:25} -> {run(world, view, m)[:200]}")
        finally:
            node.stop()
