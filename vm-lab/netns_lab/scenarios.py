"""The multi-host scenarios. Each one gets a freshly built lab and drives the project's real commands.

A scenario raises :class:`LabError` (with the evidence) when the product does not behave as it should; it
never repairs the lab behind the product's back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netns_lab.commands import (
    Project,
    fingerprint_of,
    height_of,
    own_record_confirmed,
    summary,
    tip_of,
)
from netns_lab.group_class import class_of_16  # [groups, issue 18]
from netns_lab.processes import LabProcess
from netns_lab.shell import LabError, run
from netns_lab.topology import BEHIND_NAT, LAN, ROUTER_WAN_IP
from netns_lab.wait import wait_until

STEP_TIMEOUT = 30.0       # the four steps, including the ledger look-ups on both sides
MESSAGE_TIMEOUT = 15.0
CONVERGE_TIMEOUT = 60.0
PARTITION_SECONDS = 150.0  # the equal-work partition: longer than the 120 s idle timeout of ledger links
HEAL_TIMEOUT = 120.0      # reconnect backoff after a long cut can take a while
ADDRESS_MOVE_TIMEOUT = 20.0  # --host auto: interfaces read every 5 s, then the record is mined and gossiped

# What `p2pchat chat`/`listen` print when the four steps are done, and which path a chat took.
HANDSHAKE_DONE = r"✓ 4 Agree AES key"
RELAY_PATH = r"Chat ready with .*\(path: relay "
DIRECT_PATH = r"Chat ready with .*\(path: direct"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    run: Callable[[Project], None]
    known_issue: str | None = None   # a product bug this scenario shows; it is expected to fail until fixed


def check(condition: bool, message: str) -> None:
    """A scenario's expectation: :class:`LabError` with ``message`` when it does not hold."""
    if not condition:
        raise LabError(message)


# ---- 0: the lab itself ---------------------------------------------------------------------------------
def isolation(p: Project) -> None:
    """The wiring: LAN hosts reach each other, the NAT'd host reaches out (seen as the router), nobody can
    dial the NAT'd host, and the machine's own namespace has no lab address or route."""
    lab = p.lab
    own = run(["ip", "-o", "addr", "show"]).stdout + run(["ip", "route", "show", "table", "all"]).stdout
    check("10.77." not in own, f"the machine's own namespace has a lab address or route:\n{own}")
    probe = "netns_lab.probe"
    servers = [lab.start(h, "probe", lab.module_argv(probe, "serve", lab.ip(h), "9000")) for h in ("a", "c")]
    for server in servers:
        server.wait_for("listening", 15)

    def dial(src: str, dst: str) -> tuple[int, str]:
        done = lab.run(src, lab.module_argv(probe, "dial", lab.ip(dst), "9000", "--source", lab.ip(src)))
        return done.returncode, (done.stdout + done.stderr).strip()

    code, out = dial("b", "a")
    check(code == 0 and out.endswith(lab.ip("b")), f"b should reach a and be seen as itself: {out}")
    code, out = dial("c", "a")
    check(code == 0 and out.endswith(ROUTER_WAN_IP), f"c should reach a through the NAT router: {out}")
    for src in ("a", "b", "r"):
        code, out = dial(src, "c")
        check(code != 0, f"{src} could dial the NAT'd host c: {out}")
    # Even a host that routes the home network through the router gets nowhere: it forwards no new inbound.
    lab.run("b", ["ip", "route", "add", str(BEHIND_NAT), "via", ROUTER_WAN_IP])
    done = lab.run("b", lab.module_argv(probe, "dial", lab.ip("c"), "9000", "--timeout", "1"))
    lab.run("b", ["ip", "route", "del", str(BEHIND_NAT)])
    check(done.returncode != 0, f"the NAT router let b dial c: {done.stdout}")
    for server in servers:
        lab.forget(server)


# ---- 1: the network forms --------------------------------------------------------------------------------
def network_forms(p: Project) -> None:
    """`ledger serve` on a, `ledger join` on b, r and the NAT'd c: one chain, every host's record in it, and
    every node answers look-ups for everyone (c by fingerprint, with the relay hint instead of an address)."""
    hosts = ["a", "b", "r", "c"]
    statuses = p.form_network(hosts, timeout=CONVERGE_TIMEOUT)
    fps = {h: fingerprint_of(s) for h, s in statuses.items()}

    def query(target: str) -> str:
        return fps[target] if p.natted(target) else p.lab.ip(target)

    asks = [(asker, target) for asker in hosts for target in hosts]
    answers = p.lookups([(asker, query(target)) for asker, target in asks])
    for (asker, target), found in zip(asks, answers, strict=True):
        check(found is not None, f"{asker}'s node has no binding for {target} ({query(target)})")
        assert found is not None
        check(same_fingerprint(found, fps[target]), f"{asker}'s node binds {query(target)} to the wrong key: {found}")
        if p.natted(target):
            check(not record_field(found, "ip"), f"the NAT'd host {target} claims an address: {found}")
            check(record_field(found, "relay") == p.relay_address,
                  f"the NAT'd host {target} lacks the relay hint {p.relay_address}: {found}")
        else:
            check(record_field(found, "ip") == p.lab.ip(target), f"{target}'s record has the wrong address: {found}")


# ---- 2: direct chat ------------------------------------------------------------------------------------
def direct_chat(p: Project) -> None:
    """a and b chat directly: the four steps, a dozen lines a→b (across a key rotation) and replies b→a."""
    p.form_network(["a", "b"], timeout=CONVERGE_TIMEOUT)
    listener = p.listen("b")
    chat = connect_chat(p, "a", p.lab.ip("b"))
    chat.wait_for(DIRECT_PATH, 5)
    listener.wait_for(HANDSHAKE_DONE, 5)
    exchange(chat, listener, count=12, tag="a-to-b")
    # Keys rotate every 10 messages by default; b sees the new epoch on the first message sealed under it.
    chat.wait_for(r"key rotated: our sending key is now epoch 1", MESSAGE_TIMEOUT)
    exchange(chat, listener, count=1, tag="a-to-b after rotation")
    listener.wait_for(r"key rotated: the peer's sending key is now epoch 1", MESSAGE_TIMEOUT)
    choose_chat(listener)
    exchange(listener, chat, count=3, tag="b-to-a")
    finish_chat(p, chat)
    chat.wait_for(r"13 message\(s\) sent, 13 delivered", 1)
    listener.wait_for(r"Chat (\d+ )?with a ended: a left the chat", MESSAGE_TIMEOUT)
    p.lab.forget(listener)


# ---- 3: the NAT'd host through the relay ---------------------------------------------------------------
def relay_chat(p: Project) -> None:
    """a calls the NAT'd c (found by fingerprint): the direct path cannot work, the chat runs through the
    relay on r with the four steps end to end, messages both ways."""
    statuses = p.form_network(["a", "r", "c"], timeout=CONVERGE_TIMEOUT)
    relay = p.relay("r")
    relay.wait_for(r"relay listening on", 15)
    listener = p.listen("c")
    chat = connect_chat(p, "a", fingerprint_of(statuses["c"]))
    chat.wait_for(RELAY_PATH, 5)
    chat.wait_for(rf"connected through relay {re.escape(p.relay_address)}", 5)
    relay.wait_for(r"session \d+ paired", 5)
    exchange(chat, listener, count=5, tag="a-to-c")
    choose_chat(listener)
    exchange(listener, chat, count=5, tag="c-to-a")
    finish_chat(p, chat)
    p.lab.forget(listener)
    p.lab.forget(relay)


def natted_caller(p: Project) -> None:
    """The NAT'd c calls a, whose listener has no --relay, by address and then by nickname: outbound TCP works
    through the NAT, c's hello claims no address, and a checks c by the key its relay-only record names (not by
    the router's address it sees). c's own listener stays registered at the relay meanwhile."""
    p.form_network(["a", "r", "c"], timeout=CONVERGE_TIMEOUT)
    relay = p.relay("r")
    relay.wait_for(r"relay listening on", 15)
    own = p.listen("c", "c-listen")
    listener = p.listen("a")
    for n, (peer, tag) in enumerate(((p.lab.ip("a"), "by address"), ("a", "by nickname")), start=1):
        mark = listener.mark()
        chat = connect_chat(p, "c", peer, label=f"chat-{tag.split()[1]}")
        chat.wait_for(DIRECT_PATH, 5)
        exchange(chat, listener, count=3, tag=f"c-to-a {tag}")
        listener.send(f"/to {n}")    # the listener writes to the chat it chose
        exchange(listener, chat, count=3, tag=f"a-to-c {tag}")
        finish_chat(p, chat)
        listener.wait_for(rf"Chat {n} with c ended", MESSAGE_TIMEOUT, since=mark)
    check("registered again" not in own.output(),
          f"c's calls knocked its own listener off the relay:\n{own.output()[-2000:]}")
    p.lab.forget(listener)
    p.lab.forget(own)
    p.lab.forget(relay)


# ---- 4: partition and heal -----------------------------------------------------------------------------
def partition_heal(p: Project) -> None:
    """Cut {b, d} off from {a, r, e, f}; both sides register new hosts and mine (a's side more); after the
    link is restored every node follows a's side (the most work) and no record is lost."""
    lab = p.lab
    p.form_network(["a", "b", "r"], timeout=CONVERGE_TIMEOUT)
    for host in ("d", "e", "f"):
        lab.add_host(host)
    lab.topo.partition(["b", "d"])
    # b's side: one new host.
    p.ledger_join("d", "b")
    p.wait_converged(["b", "d"], timeout=CONVERGE_TIMEOUT)
    # a's side: two new hosts one after the other, so two blocks: more work than b's side.
    p.ledger_join("e", "a")
    p.wait_converged(["a", "r", "e"], timeout=CONVERGE_TIMEOUT)
    p.ledger_join("f", "a")
    side_a = p.wait_converged(["a", "r", "e", "f"], timeout=CONVERGE_TIMEOUT)["a"]
    side_b = p.status("b")
    check(side_b is not None, "b's node stopped answering during the partition")
    assert side_b is not None
    check(height_of(side_a) > height_of(side_b),
          f"a's side should have mined more: a {summary(side_a)}, b {summary(side_b)}")
    e_block = p.lookup("a", lab.ip("e"))
    check(e_block is not None, "e's record is missing on a's side")

    lab.topo.heal()
    hosts = ["a", "b", "r", "d", "e", "f"]
    final = p.wait_converged(hosts, timeout=HEAL_TIMEOUT)
    check(tip_of(final["b"]) != tip_of(side_b), "b still has its partition-time tip")
    check(height_of(final["a"]) >= height_of(side_a), "the chain got shorter than a's side")
    # a's side had more work: its blocks stay where they were; d's record was mined again on top.
    e_after = p.lookup("b", lab.ip("e"))
    check(e_after is not None and block_height(e_after) == block_height(e_block),
          f"e's record moved (before {e_block}, after {e_after}): a's chain was not kept")
    asks = [(asker, host) for asker in ("a", "b") for host in hosts]
    answers = p.lookups([(asker, lab.ip(host)) for asker, host in asks])
    for (asker, host), found in zip(asks, answers, strict=True):
        check(found is not None and same_fingerprint(found, fingerprint_of(final[host])),
              f"after healing, {asker}'s node lost {host}'s record: {found}")


def partition_equal_work(p: Project) -> None:
    """Cut {b, d} off from {a, r, e} for 150 s (long enough for every connection across the cut to time out);
    each side registers one newcomer, so each mines one block: equal work. After the link is restored, with
    nothing new registered, every node settles on one tip (the lower tip hash wins the tie; the other side's
    record is mined again on top) and every record resolves everywhere."""
    lab = p.lab
    p.form_network(["a", "b", "r"], timeout=CONVERGE_TIMEOUT)
    for host in ("d", "e"):
        lab.add_host(host)
    lab.topo.partition(["b", "d"])
    cut_at = time.monotonic()
    p.ledger_join("d", "b")
    side_b = p.wait_converged(["b", "d"], timeout=CONVERGE_TIMEOUT)["b"]
    p.ledger_join("e", "a")
    side_a = p.wait_converged(["a", "r", "e"], timeout=CONVERGE_TIMEOUT)["a"]
    check(height_of(side_a) == height_of(side_b) and tip_of(side_a) != tip_of(side_b),
          f"each side should have mined one block: a {summary(side_a)}, b {summary(side_b)}")
    time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut_at)))
    lab.topo.heal()
    hosts = ["a", "b", "r", "d", "e"]
    final = p.wait_converged(hosts, timeout=HEAL_TIMEOUT)
    asks = [(asker, host) for asker in ("a", "b") for host in hosts]
    answers = p.lookups([(asker, lab.ip(host)) for asker, host in asks])
    for (asker, host), found in zip(asks, answers, strict=True):
        check(found is not None and same_fingerprint(found, fingerprint_of(final[host])),
              f"after healing, {asker}'s node lacks {host}'s record: {found}")


# ---- 5: address change ---------------------------------------------------------------------------------
def address_change(p: Project) -> None:
    """b runs its ledger node and its listener with ``--host auto`` and gets a new address while both run (as
    after a new DHCP lease): without a restart its node publishes the updated record, a and r look b up (by
    nickname and by fingerprint) at the new address within ADDRESS_MOVE_TIMEOUT, the old address no longer
    resolves, and a's next chat with b (by fingerprint) reaches the same listener at the new address. b's
    nickname is its own, never derived from an address."""
    lab = p.lab
    p.following.add("b")
    statuses = p.form_network(["a", "b", "r"], timeout=CONVERGE_TIMEOUT)
    fp_b = fingerprint_of(statuses["b"])
    old_ip = lab.ip("b")
    check(statuses["b"].get("host") == old_ip,
          f"b's node with --host auto is not at {old_ip}: {summary(statuses['b'])}")
    listener = p.listen("b", "listen")
    chat = connect_chat(p, "a", fp_b, label="chat-old")
    chat.wait_for(rf"connected directly to {re.escape(old_ip)}:", 5)
    exchange(chat, listener, count=1, tag="before-move")
    finish_chat(p, chat)

    new_ip = str(LAN[22])
    moved_at = time.monotonic()
    lab.topo.change_address("b", new_ip)

    def found_at(asker: str, query: str) -> bool:
        binding = p.lookup(asker, query)
        return binding is not None and record_field(binding, "ip") == new_ip and same_fingerprint(binding, fp_b)

    def moved() -> bool:
        return found_at("a", "b") and found_at("r", fp_b) and p.lookup("a", old_ip) is None

    wait_until(moved, ADDRESS_MOVE_TIMEOUT, f"a and r to find b (by nickname and fingerprint) at {new_ip}",
               interval=0.5, describe=lambda: f"a asks for b: {p.lookup('a', 'b')}; {old_ip}: {p.lookup('a', old_ip)}")
    print(f"    b's move to {new_ip} was seen by a and r after {time.monotonic() - moved_at:.1f} s", flush=True)
    check(listener.running(), "b's listener exited when its address changed")
    # the listener notices the move by itself (its own look at the interfaces, every few seconds) and says so
    listener.wait_for(rf"now listening on {re.escape(new_ip)}:", ADDRESS_MOVE_TIMEOUT)
    chat = connect_chat(p, "a", fp_b, label="chat-new")
    chat.wait_for(rf"connected directly to {re.escape(new_ip)}:", 5)
    exchange(chat, listener, count=1, tag="after-move")
    finish_chat(p, chat)
    lab.forget(listener)


# ---- clocks ---------------------------------------------------------------------------------------------
def clock_skew(p: Project) -> None:
    """b's clock is 10 min ahead and d's 10 min behind (libfaketime on their ledger nodes). Both are told so in
    plain words (``ledger status`` and the node's log), nobody bans anybody, the network still agrees on one
    chain with every record, and no node's ``ledger status`` calls its record mined unless the other nodes
    resolve that very record."""
    lab = p.lab
    lab.add_host("d")
    p.clock_offsets.update({"b": "+10m", "d": "-10m"})
    hosts = ["a", "r", "b", "d"]
    statuses = p.form_network(hosts, timeout=CONVERGE_TIMEOUT)
    for host, way in (("b", "ahead of"), ("d", "behind")):
        warning = (statuses[host].get("clock") or {}).get("warning") or ""
        check(re.search(rf"your clock is (9|10|11) min {way} your peers; fix the system time", warning) is not None,
              f"{host}'s status does not say its clock is 10 min {way} its peers: {statuses[host].get('clock')}")
        p.ledgers[host].wait_for(rf"your clock is \d+ min {way} your peers", 5)
    for host in ("a", "r"):
        check(not (statuses[host].get("clock") or {}).get("warning"),
              f"{host}, whose clock is right, was warned: {statuses[host].get('clock')}")
    final = p.statuses(hosts)
    for host, status in final.items():
        check(status is not None and not status.get("banned"), f"{host} banned a peer: {summary(status)}")
    fps = {h: fingerprint_of(s) for h, s in statuses.items()}
    asks = [(asker, target) for asker in hosts for target in hosts if asker != target]
    for (asker, target), found in zip(asks, p.lookups([(a, fps[t]) for a, t in asks]), strict=True):
        own = (statuses[target].get("own_record") or {})
        check(found is not None and record_field(found, "seq") == own.get("seq"),
              f"{target}'s status says its record (seq {own.get('seq')}) is {own.get('state')}, but {asker}'s "
              f"node resolves {found}")


# ---- 6: kill -9 and restart ----------------------------------------------------------------------------
def kill_restart(p: Project) -> None:
    """b's ledger node is killed with SIGKILL; its store still verifies; while it is down d joins and a block
    is mined; b restarted on the same data catches up and still holds its own binding."""
    lab = p.lab
    statuses = p.form_network(["a", "b", "r"], timeout=CONVERGE_TIMEOUT)
    p.kill_ledger("b")
    code, out = p.verify("b")
    check(code == 0, f"ledger verify of b's store after kill -9 failed (exit {code}):\n{out}")
    lab.add_host("d")
    p.ledger_join("d", "a")
    p.wait_converged(["a", "r", "d"], timeout=CONVERGE_TIMEOUT)
    p.ledger_join("b", "a")
    final = p.wait_converged(["a", "b", "r", "d"], timeout=CONVERGE_TIMEOUT)
    check(height_of(final["b"]) > height_of(statuses["b"]), "b did not catch up with the block mined while down")
    found_d = p.lookup("b", lab.ip("d"))
    check(found_d is not None and same_fingerprint(found_d, fingerprint_of(final["d"])),
          f"b's node does not know d after rejoining: {found_d}")
    found_b = p.lookup("a", lab.ip("b"))
    check(found_b is not None and same_fingerprint(found_b, fingerprint_of(statuses["b"])),
          f"b's binding changed or vanished: {found_b}")
    check(own_record_confirmed(final["b"]), "b's own record is not confirmed after the restart")


# ---- chat helpers --------------------------------------------------------------------------------------
def connect_chat(p: Project, host: str, peer: str, *, label: str = "chat") -> LabProcess:
    """``p2pchat chat PEER`` on ``host``, returned once the four steps are done."""
    chat = p.chat(host, peer, label=label)
    chat.wait_for(HANDSHAKE_DONE, STEP_TIMEOUT)
    for step in ("1 Connect", "2 Swap public keys", "3 Authenticate"):
        chat.wait_for(f"✓ {step} ", 1)
    return chat


def choose_chat(listener: LabProcess) -> None:
    """``listen`` sends typed lines only to the chat the user chose: choose the one it announced."""
    ready = listener.wait_for(r"Chat (\d+) with .* is ready", MESSAGE_TIMEOUT)
    listener.send(f"/to {ready.group(1)}")


def exchange(sender: LabProcess, receiver: LabProcess, *, count: int, tag: str) -> None:
    """``sender`` types ``count`` lines; each must appear at ``receiver``."""
    start = receiver.mark()
    for i in range(count):
        sender.send(f"{tag} line {i} ✓ ünïcode")
    for i in range(count):
        receiver.wait_for(re.escape(f"{tag} line {i} ✓ ünïcode"), MESSAGE_TIMEOUT, since=start)


def finish_chat(p: Project, chat: LabProcess) -> None:
    """End of input says goodbye and exits 0."""
    chat.close_stdin()
    code = chat.wait_exit(15)
    check(code == 0, f"{chat.name} exited with status {code}:\n{chat.tail()}")
    p.lab.forget(chat)


# ---- reading `ledger lookup --json` --------------------------------------------------------------------
def record_field(found: dict[str, Any], name: str) -> Any:
    record = found.get("record")
    if isinstance(record, dict) and name in record:
        return record[name]
    return found.get(name)


def same_fingerprint(found: dict[str, Any], fingerprint: str) -> bool:
    fp = record_field(found, "fingerprint")
    return fp is not None and _plain(str(fp)) == _plain(fingerprint)


def _plain(fp: str) -> str:
    return re.sub(r"[^0-9a-f]", "", fp.lower())


def block_height(found: dict[str, Any] | None) -> int | None:
    if found is None:
        return None
    for key in ("height", "block", "block_height"):
        if isinstance(found.get(key), int):
            return int(found[key])
    return None


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("isolation", "the lab's wiring: NAT, no inbound to the NAT'd host, nothing in the root namespace",
             isolation),
    Scenario("network-forms", "ledger serve + ledger join on four hosts converge; everyone resolves everyone",
             network_forms),
    Scenario("direct-chat", "a ↔ b directly through the four steps, across a key rotation", direct_chat),
    Scenario("relay-chat", "a ↔ NAT'd c through the relay, four steps end to end", relay_chat),
    Scenario("natted-caller", "NAT'd c calls a (no --relay) directly and is checked by its key; its own listener "
             "stays registered", natted_caller),
    Scenario("partition", "link cut and restored: most-work chain wins, no record lost", partition_heal),
    Scenario("partition-equal", "150 s cut, one block on each side (equal work), restored: one tip everywhere "
             "without anything new registered", partition_equal_work),
    Scenario("address-change", "b (--host auto) moves while running: record follows, chats reach it",
             address_change),
    Scenario("clock-skew", "b's clock +10 min, d's -10 min (libfaketime): told plainly, no bans, one chain",
             clock_skew),
    Scenario("kill-restart", "kill -9 a node, verify its store, restart: it rejoins and catches up",
             kill_restart),
    # [groups, issue 18] the class of 16 (vm-lab/netns_lab/group_class.py)
    Scenario("class-of-16", "16 hosts, one group of all: every member gets every message; p99 to all 15 others "
             "≤ 250 ms", lambda p: class_of_16(p)),
)}
