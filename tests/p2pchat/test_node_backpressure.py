"""Back-pressure end to end over real sockets: a UI that does not read stops its node's reader, TCP flow control
reaches the sender, the sender's outbox refuses more instead of growing, and a delivery receipt means the
receiver's UI took the message."""

from __future__ import annotations

from p2pchat.channel_driver import OutboxFull
from p2pchat.event_queue import SESSION_BYTES
from p2pchat.events import DeliveryReceipt, MessageReceived
from p2pchat.session_writer import OUTBOX_LIMIT
from tests.p2pchat.node_kit import connect_all, pair, wait_until

MIB = 1024 * 1024


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_a_ui_that_does_not_read_bounds_memory_and_gets_its_sender_no_receipts(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        bob.log.reading = False                       # bob's UI stops reading
        before = rss_kib()
        accepted: list[int] = []
        prefixes: list[str] = []
        refused = 0
        for i in range(300):
            try:
                accepted.append(alice.node.send_text(sid, f"{i:04d}" + "x" * (MIB - 8)))
                prefixes.append(f"{i:04d}")
            except OutboxFull:
                refused += 1
        # Bob's reader holds back once his UI has SESSION_BYTES of messages waiting, and alice's writer waits
        # for TCP: what alice still holds stays under her outbox limit.
        wait_until(lambda: bob.node.events.waiting(bsid)[1] >= SESSION_BYTES, 30, what="bob's reader to pause")
        peak = rss_kib()
        waiting_events, waiting_bytes = bob.node.events.waiting(bsid)
        print(f"\nUI not reading, 300 x 1 MiB: {len(accepted)} accepted, {refused} refused; RSS {before / 1024:.0f} -> "
              f"{peak / 1024:.0f} MiB; {waiting_events} messages ({waiting_bytes / MIB:.1f} MiB) wait for bob's UI")
        assert refused > 0 and len(accepted) < 300
        assert waiting_bytes <= SESSION_BYTES + MIB + 1024
        assert peak - before < (SESSION_BYTES + 2 * OUTBOX_LIMIT + 32 * MIB) // 1024   # was +308 MB in one node
        alice.log.pump()
        assert alice.log.all(DeliveryReceipt) == []   # nothing bob's UI has not taken is receipted

        bob.log.reading = True                        # the UI catches up: everything arrives, and only then
        wait_until(lambda: len(bob.log.all(MessageReceived)) == len(accepted), 60, what="every accepted text")
        wait_until(lambda: alice.node.pending_receipts(sid) == 0, 30, step=alice.log.pump, what="the receipts")
        assert sorted(e.msg_id for e in alice.log.all(DeliveryReceipt)) == accepted
        assert [m.text[:4] for m in bob.log.all(MessageReceived)] == prefixes


def test_receipts_follow_the_ui_taking_the_message_not_its_arrival(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        bob.log.reading = False
        first = alice.node.send_text(sid, "read me")
        wait_until(lambda: bob.node.events.waiting(bsid)[0] >= 1, 10, what="the text at bob's node")
        alice.log.pump()
        assert alice.node.pending_receipts(sid) == 1 and not alice.log.all(DeliveryReceipt)
        bob.log.take()                                 # the UI takes it
        alice.log.wait(DeliveryReceipt, 10, msg_id=first)
