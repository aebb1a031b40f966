import socket, struct, time, msgpack
from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import CHAT_PORT, NETWORK, connect_from, start_world
from tests.spec.impl.peer import MAX_FRAME, ChatPeer
from tests.spec.impl.wire import socket_stream, pack, SpecError
from tests.spec.impl import chatcrypto as cc

def raw(world, data, read=True):
    with connect_from(world.spec_ip, world.host, CHAT_PORT) as s:
        s.sendall(data)
        st = socket_stream(s, MAX_FRAME)
        try:
            return st.read()
        except Exception as e:
            return repr(e)

def hello(**kw):
    f = {"version": 2, "network": "p2pchat", "nickname": "spec", "address": ""}
    f.update(kw)
    return f

def test_probe(tmp_path):
    world = start_world(tmp_path)
    with world.cluster:
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            for name, data in {
                "v7": pack("hello", **hello(version=7)),
                "nick esc": pack("hello", **hello(nickname="a\x1b[31m")),
                "nick bidi": pack("hello", **hello(nickname="a\u202eb")),
                "addr junk": pack("hello", **hello(address="junk")),
                "addr host": pack("hello", **hello(address="example.com:80")),
                "addr port0": pack("hello", **hello(address="127.0.0.1:0")),
                "addr noncanon": pack("hello", **hello(address="127.000.0.1:80")),
                "addr v6 nobrackets": pack("hello", **hello(address="::1:80")),
                "nick 65": pack("hello", **hello(nickname="a"*65)),
                "nick 64": pack("hello", **hello(nickname="a"*64)),
                "network empty": pack("hello", **hello(network="")),
                "extra field": pack("hello", **hello(), zzz=1),
                "t not first": (lambda b: struct.pack(">I", len(b)) + b)(msgpack.packb({"version": 2, "network": "p2pchat", "nickname": "x", "address": "", "t": "hello"})),
                "auth first": pack("auth", ledgers="agree", sig=b"x"),
                "unknown type": pack("bogus"),
                "too long": struct.pack(">I", 3 * 1024 * 1024),
                "version bool": pack("hello", **hello(version=True)),
                "version 70000": pack("hello", **hello(version=70000)),
                "ext type": (lambda b: struct.pack(">I", len(b)) + b)(msgpack.packb({"t": "hello", "version": msgpack.ExtType(1, b"x"), "network": "p2pchat", "nickname": "x", "address": ""})),
                "not a map": (lambda b: struct.pack(">I", len(b)) + b)(msgpack.packb([1, 2])),
                "version float": pack("hello", **hello(version=2.0)),
            }.items():
                print(f"{name:20} -> {str(raw(world, data))[:150]}")
        finally:
            node.stop()
        print(node.output()[-3000:])
