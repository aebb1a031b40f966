import socket, struct, time, os, math, msgpack
from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import CHAT_PORT, NETWORK, connect_from, start_world
from tests.spec.impl.peer import MAX_FRAME, ChatPeer
from tests.spec.impl.wire import socket_stream, pack, SpecError
from tests.spec.impl import chatcrypto as cc

def session(world, view):
    s = connect_from(world.spec_ip, world.host, CHAT_PORT)
    p = ChatPeer(world.key, "spec-peer", f"{world.spec_ip}:{CHAT_PORT}", view, s.sendall, socket_stream(s, MAX_FRAME), NETWORK)
    p.initiate(world.host)
    return s, p

def raw_seal(p, padded):
    snd = p.sender
    cipher = cc.AES.new(snd.key, cc.AES.MODE_GCM, nonce=cc.nonce(snd.counter), mac_len=16)
    cipher.update(cc.sealed_aad(snd.t2, snd.direction, snd.epoch, snd.counter))
    ct, tag = cipher.encrypt_and_digest(padded)
    p.send("sealed", epoch=snd.epoch, counter=snd.counter, box=ct + tag)
    snd.counter += 1

def outcome(s, p):
    s.settimeout(2.5)
    got = []
    try:
        while True:
            f = p.stream.read()
            if f["t"] != "sealed":
                got.append(f"{f['t']}:{f.get('reason')}"); break
            m = p.receiver.open(f)
            got.append(f"{m['t']}:{m.get('reason', m.get('ids', ''))}" if m else "refused-by-us")
            if m and m["t"] == "goodbye": break
    except (socket.timeout, TimeoutError):
        got.append("(silence)")
    except SpecError as e:
        got.append(f"({e})")
    return got

def test_probe(tmp_path):
    world = start_world(tmp_path)
    with world.cluster:
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            view = world.ledger_view()
            T = 1700000000.5
            cases = {
              "sent_at int": lambda p, i: p.seal(cc.inner("text", id=i, sent_at=1700000000, text="x")),
              "sent_at 1e11": lambda p, i: p.seal(cc.inner("text", id=i, sent_at=1e11, text="x")),
              "sent_at nan": lambda p, i: p.seal(cc.inner("text", id=i, sent_at=math.nan, text="x")),
              "sent_at neg": lambda p, i: p.seal(cc.inner("text", id=i, sent_at=-1.0, text="x")),
              "sent_at f32": lambda p, i: p.seal(msgpack.packb({"t": "text", "id": i, "sent_at": T, "text": "x"}, use_single_float=True)),
              "id 0": lambda p, i: p.seal(cc.inner("text", id=0, sent_at=T, text="x")),
              "id replay": lambda p, i: p.seal(cc.inner("text", id=1, sent_at=T, text="x")),
              "text too big": lambda p, i: p.seal(cc.inner("text", id=i, sent_at=T, text="é" * (524289))),
              "receipt unsent": lambda p, i: p.seal(cc.inner("receipt", ids=[50])),
              "receipt empty": lambda p, i: p.seal(cc.inner("receipt", ids=[])),
              "receipt 257": lambda p, i: p.seal(cc.inner("receipt", ids=[1] * 257)),
              "pad nonzero": lambda p, i: raw_seal(p, cc.pad(cc.inner("typing", on=True))[:-1] + b"\x01"),
              "pad bucket": lambda p, i: raw_seal(p, cc.pad(cc.inner("typing", on=True)) + bytes(768)),
              "pad len over": lambda p, i: raw_seal(p, struct.pack(">I", 300) + bytes(252)),
              "texts nonincr": lambda p, i: p.seal(cc.inner("texts", texts=[[i, T, "a"], [i, T, "b"]])),
              "texts 65": lambda p, i: p.seal(cc.inner("texts", texts=[[i * 100 + k, T, "a"] for k in range(65)])),
              "texts empty": lambda p, i: p.seal(cc.inner("texts", texts=[])),
              "rotate epoch 5": lambda p, i: p.seal(cc.inner("rotate", epoch=5, pub=os.urandom(32))),
              "rotate_ack unasked": lambda p, i: p.seal(cc.inner("rotate_ack", epoch=1, pub=os.urandom(32))),
              "unknown inner": lambda p, i: p.seal(cc.inner("bogus")),
              "typing int": lambda p, i: p.seal(cc.inner("typing", on=1)),
              "goodbye long": lambda p, i: p.seal(cc.inner("goodbye", reason="x" * 1001)),
              "no t": lambda p, i: p.seal(msgpack.packb({"id": 1})),
              "not msgpack": lambda p, i: p.seal(b"\xc1\xc1"),
              "epoch 2": lambda p, i: p.send("sealed", epoch=2, counter=p.sender.counter + i, box=os.urandom(300)),
              "box 15": lambda p, i: p.send("sealed", epoch=0, counter=p.sender.counter + i, box=os.urandom(15)),
              "hs frame after": lambda p, i: p.send("key_ok"),
              "error after": lambda p, i: p.send("error", reason="evil \x1b[31m"),
              "rotate pub lowpoint": lambda p, i: p.seal(cc.inner("rotate", epoch=1, pub=bytes(32))),
            }
            for name, make in cases.items():
                s, p = session(world, view)
                p.send_text("first")  # id 1
                for i in range(2, 5):
                    make(p, i)
                print(f"{name:20} -> {outcome(s, p)}")
                s.close()
        finally:
            node.stop()
        out = node.output()
        import re
        print("\n".join(l for l in out.splitlines() if "first" not in l and "Agree" not in l and "Authenticate" not in l and "Swap" not in l and "Connect" not in l)[-9000:])
