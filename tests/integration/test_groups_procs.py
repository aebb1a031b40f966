"""Issue 18 with five real ``p2pchat listen`` processes on 127.0.0.x (each with its own ledger node): a group is
created, a member added while another is removed at the same time (every view converges), the removed member gets
nothing new, a member killed with -9 during the conversation catches up in order when restarted, and a member's
forged membership change and a message claiming another member as its sender are refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from p2pchat.contacts import ContactStore
from p2pchat.events import StepResult
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.group_store import GroupStore
from p2pchat.groups import GROUP_WIRE, SIGN_CONTEXT, Change
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from p2pchat.vault import Vault
from tests.conftest import free_loopback_ip, make_identities
from tests.helpers import wait_until
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster
from tests.p2pchat.node_kit import EventLog

pytestmark = pytest.mark.slow

NAMES = ("alice", "bob", "carol", "dave", "erin")


def _seed_contacts(dirs: dict[str, Path], idents: dict[str, Identity]) -> None:
    """They chatted before: each knows the others' keys under their names (the contact store is what groups are
    made of)."""
    for name, d in dirs.items():
        store = ContactStore.in_data_dir(d, Vault.open(d, None))
        for other, ident in idents.items():
            if other != name:
                store.record_chat(ident.public_der, ident.fingerprint, nickname=other, ip=None, address=None)
                store.rename(ident.fingerprint.hex(), other)      # the user's own name for it, whatever it calls itself
        store.close()


def _members(proc: ChatProcess, group: str) -> set[str]:
    """The members ``/group list`` shows last for ``group``."""
    lines = [line for line in proc.output().splitlines() if f"  {group}: " in line]
    if not lines:
        return set()
    return {name.split(" ")[0] for name in lines[-1].split(f"  {group}: ", 1)[1].split(" — ")[0].split(", ")}


def _shown(proc: ChatProcess, tokens: list[str]) -> list[str]:
    """``tokens`` in the order ``/group show lab`` lists them."""
    mark = len(proc.output())
    proc.write("/group show lab")
    wait_until(lambda: all(t in proc.output()[mark:] for t in tokens), 30, what=f"the conversation:\n{proc.output()}")
    part = proc.output()[mark:]
    return sorted(tokens, key=part.index)


def _order(proc: ChatProcess, tokens: list[str]) -> list[str]:
    out = proc.output()
    return sorted((t for t in tokens if t in out), key=out.index)


def test_five_listen_processes_keep_one_group_through_edits_a_kill_and_forgeries(tmp_path: Path) -> None:
    hosts = {name: free_loopback_ip() for name in NAMES}
    with Cluster(tmp_path, make_identities(5)) as cluster:
        ledger_network(cluster, list(hosts.values()), timeout=120)
        dirs = {name: cluster.data_dir(ip) for name, ip in hosts.items()}
        idents = {name: Identity.load(d / KEY_FILE) for name, d in dirs.items()}
        _seed_contacts(dirs, idents)
        procs: dict[str, ChatProcess] = {}
        spare: list[ChatProcess] = []

        def start(name: str) -> ChatProcess:
            if name in procs:
                spare.append(procs[name])
            proc = procs[name] = ChatProcess("listen", "--host", hosts[name], "--accept-all", "--nickname", name,
                                             "--data-dir", str(dirs[name]))
            proc.wait_for("Waiting for chats")
            return proc

        try:
            for name in NAMES:
                start(name)
            alice, bob, carol, dave, erin = (procs[n] for n in NAMES)
            alice.write("/group create lab bob carol dave")
            alice.wait_for("Group lab created")
            for p in (bob, carol, dave):
                p.wait_for("you were added to 'lab' (4 members)", timeout=60)
            alice.write("/gsay lab msg-1 hello all")
            for p in (bob, carol, dave):
                p.wait_for("[lab] alice: msg-1 hello all", timeout=60)
            alice.wait_for("message 1 delivered to 3 of 3", timeout=60)

            # two members edit at once: bob adds erin while alice (the creator) removes dave
            bob.write("/group add lab erin")
            alice.write("/group remove lab dave")
            dave.wait_for("you were removed from 'lab'", timeout=60)
            erin.wait_for("you were added to 'lab'", timeout=60)
            for n in ("alice", "bob", "carol", "erin"):
                p, want = procs[n], {"you", "alice", "bob", "carol", "erin"} - {n}
                wait_until(lambda p=p, want=want: _members(p, "lab") == want, 60, interval=0.5,
                           what=f"the members converge:\n{p.output()}", step=lambda p=p: p.write("/group list"))
            bob.write("/gsay lab msg-2 welcome erin")
            for p in (alice, carol, erin):
                p.wait_for("[lab] bob: msg-2 welcome erin", timeout=60)

            # carol's process dies without a goodbye; the others talk on; she comes back and catches up in order
            carol.proc.kill()
            carol.wait_exit()
            alice.write("/gsay lab msg-3 while carol is away")
            erin.wait_for("msg-3", timeout=60)
            bob.write("/gsay lab msg-4 bob too")
            erin.wait_for("msg-4", timeout=60)
            alice.write("/gsay lab msg-5 last one")
            erin.wait_for("msg-5", timeout=60)
            carol = start("carol")
            carol.wait_for("msg-5", timeout=90)
            carol.wait_for("msg-4", timeout=60)
            assert _order(carol, ["msg-3", "msg-5"]) == ["msg-3", "msg-5"]      # one sender's in its order
            tokens = [f"msg-{i}" for i in range(1, 6)]
            assert _shown(alice, tokens) == _shown(carol, tokens) == tokens     # the same causal order on both

            # the removed member got nothing new
            assert "msg-2" not in dave.output() and "msg-5" not in dave.output(), dave.output()

            # erin turns hostile: her own program is replaced by one that sends forged frames
            erin.stop()
            gid, create = _group_of(dirs["erin"])
            node = ChatNode(idents["erin"], host=hosts["erin"], port=0, nickname="erin", data_dir=dirs["erin"],
                            history=False)
            node.start()
            try:
                events = EventLog(node)
                sid = node.open_session(f"{hosts['alice']}:8471")
                node.run_all(sid)
                events.wait(StepResult, 60, session=sid, step=Step.AGREE_KEY, ok=True)
                carol_fp = idents["carol"].fingerprint
                node.send_group_frame(sid, GROUP_WIRE.encode_body(
                    "text", ref=1, group=gid, sender=carol_fp, counter=1, version=1, lamport=99, sent_at=time.time(),
                    text="msg-fake carol never said this"))
                forged = Change(gid, "remove", idents["bob"].fingerprint, None, "", (create.hash,), 2,
                                idents["alice"].fingerprint, time.time())
                forged = Change(**{**forged.__dict__, "sig": idents["erin"].sign(SIGN_CONTEXT, forged.signed_body())})
                node.send_group_frame(sid, GROUP_WIRE.encode_body("changes", ref=2, group=gid,
                                                                  changes=[forged.encode()]))
                alice.wait_for("a group message claiming another member as its sender was refused", timeout=60)
                alice.wait_for("a membership change with a forged signature was refused", timeout=60)
            finally:
                node.close()
            alice.write("/group list")
            wait_until(lambda: "bob" in _members(alice, "lab"), 30, what="bob still a member")
            assert "msg-fake" not in alice.output()
        except BaseException:
            for name, proc in procs.items():          # the evidence, on failure
                print(f"--- {name}\n{proc.output()}")
            raise
        finally:
            for proc in [*procs.values(), *spare]:
                proc.stop()


def _group_of(data_dir: Path) -> tuple[bytes, Change]:
    """The group id and its creation, as the member of ``data_dir`` keeps them."""
    store = GroupStore.in_data_dir(data_dir, Vault.open(data_dir, None))
    try:
        changes = [Change.decode(bytes(r.record["raw"])) for r in store.rows("change")]
    finally:
        store.close()
    create = next(c for c in changes if c.op == "create")
    return create.group, create

