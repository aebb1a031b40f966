"""The ledger cross-check of steps 2 and 3 (docs/protocol.md §3.2–3.3): each side's final block and tip travel in
its `key` frame and sit in T2; each step-3 signature covers the signer's verdict on the peer's checkpoint; a
disagreement in either direction is reported to both sides after step 3, and the chat goes on."""

from __future__ import annotations

import hashlib

from p2pchat.events import MessageReceived, Notice
from p2pchat.foundation import crypto
from p2pchat.handshake import NO_POSITION, ChainPosition, LedgersDisagree, StepDone, judge_checkpoint
from p2pchat.steps import Step
from tests.p2pchat.handshake_pair import Pair
from tests.p2pchat.node_kit import connect_all, pair, wait_until
from tests.p2pchat.test_handshake import assert_nothing_established, frame_type, rewrite


class Chain:
    """A verified header chain as the cross-check reads it: block hashes by height, and a final height."""

    def __init__(self, label: str, height: int, final: int, fork: int | None = None) -> None:
        # blocks up to ``fork`` are the common history; above it this chain has its own (labelled) blocks
        def block(h: int) -> bytes:
            own = fork is not None and h > fork
            return hashlib.sha256(f"{label if own else 'common'} {h}".encode()).digest()
        self.hashes = [block(h) for h in range(height + 1)]
        self.final = final

    def position(self) -> ChainPosition:
        return ChainPosition(self.final, self.hashes[self.final], len(self.hashes) - 1, self.hashes[-1])

    def hash_at(self, height: int) -> bytes | None:
        return self.hashes[height] if 0 <= height < len(self.hashes) else None


def disagreements(pair: Pair) -> tuple[list[LedgersDisagree], list[LedgersDisagree]]:
    return pair.i.of(LedgersDisagree), pair.r.of(LedgersDisagree)


def test_ledgers_that_agree_give_no_warning_and_both_verdicts_are_agree(identities):
    pair = Pair(identities[0], identities[1], i_view=Chain("a", 20, 14), r_view=Chain("b", 18, 12)).run()
    assert pair.i.established is not None and pair.r.established is not None
    assert (pair.i.hs.verdict, pair.i.hs.peer_verdict) == ("agree", "agree")
    assert (pair.r.hs.verdict, pair.r.hs.peer_verdict) == ("agree", "agree")
    assert disagreements(pair) == ([], [])
    # both positions are in the one transcript both sides hold
    assert pair.i.hs.peer_position == Chain("b", 18, 12).position() == pair.r.hs._my_position


def test_a_checkpoint_off_the_initiators_chain_warns_both_sides_after_step_three(identities):
    # the responder finalised block 12 of a branch that forked at 9; the initiator holds another block 12
    pair = Pair(identities[0], identities[1], i_view=Chain("a", 20, 14, fork=9),
                r_view=Chain("b", 15, 12, fork=9)).run()
    (seen_i,), (seen_r,) = disagreements(pair)
    assert (seen_i.ours, seen_i.theirs) == ("conflict", "conflict")    # each final block is off the other chain
    assert (seen_r.ours, seen_r.theirs) == ("conflict", "conflict")
    assert seen_i.peer == seen_r.own == Chain("b", 15, 12, fork=9).position()
    # reported once step 3 verified, before its StepDone; the chat is established anyway (a warning, not a stop)
    events = pair.i.events
    assert next(e.step for e in events[events.index(seen_i) + 1:] if isinstance(e, StepDone)) is Step.AUTHENTICATE
    assert not any(isinstance(e, StepDone) and e.step is Step.AUTHENTICATE for e in events[:events.index(seen_i)])
    assert pair.i.established is not None and pair.r.established is not None


def test_only_the_side_that_sees_the_fork_judges_conflict_and_the_other_learns_it_from_the_signed_verdict(
        identities):
    # the initiator's final block (5) is below the fork (9): on the responder's chain. The responder's final block
    # (12) is above it: not on the initiator's chain. Only the initiator can see that; the responder is told.
    pair = Pair(identities[0], identities[1], i_view=Chain("a", 20, 5, fork=9),
                r_view=Chain("b", 15, 12, fork=9)).run()
    (seen_i,), (seen_r,) = disagreements(pair)
    assert (seen_i.ours, seen_i.theirs) == ("conflict", "agree")
    assert (seen_r.ours, seen_r.theirs) == ("agree", "conflict")
    # and the other way round: the responder sees it, the initiator is told
    pair = Pair(identities[0], identities[1], i_view=Chain("a", 15, 12, fork=9),
                r_view=Chain("b", 20, 5, fork=9)).run()
    (seen_i,), (seen_r,) = disagreements(pair)
    assert (seen_i.ours, seen_i.theirs) == ("agree", "conflict")
    assert (seen_r.ours, seen_r.theirs) == ("conflict", "agree")


def test_a_checkpoint_above_our_tip_is_unknown_not_a_conflict(identities):
    # the responder's ledger is behind: the initiator's final block 30 is above its tip 12
    pair = Pair(identities[0], identities[1], i_view=Chain("a", 40, 30), r_view=Chain("b", 12, 10)).run()
    assert pair.r.hs.verdict == "unknown" and pair.i.hs.peer_verdict == "unknown"
    assert pair.i.hs.verdict == "agree"
    assert disagreements(pair) == ([], [])
    # a side with no ledger view sends the all-zero position, judged unknown, never a conflict
    assert judge_checkpoint(NO_POSITION, Chain("a", 5, 3)) == "unknown"
    assert judge_checkpoint(Chain("a", 5, 3).position(), None) == "unknown"
    pair = Pair(identities[0], identities[1], i_view=Chain("a", 9, 4)).run()
    assert (pair.i.hs.verdict, pair.r.hs.verdict) == ("unknown", "unknown") and disagreements(pair) == ([], [])


def test_a_forged_checkpoint_in_transit_breaks_step_three_and_shows_no_warning(identities):
    """A man in the middle that rewrites the responder's checkpoint (to scare the initiator) changes the T2 the
    initiator signs: the responder refuses that signature, nothing is established and nobody is warned."""
    forged = hashlib.sha256(b"forged").digest()

    def wire(src, frame):
        if src.name == "responder" and frame_type(frame) == "key":
            return [rewrite(frame, final_hash=forged)]
        return [frame]

    pair = Pair(identities[0], identities[1], i_view=Chain("a", 20, 14), r_view=Chain("a", 20, 14), wire=wire).run()
    assert pair.i.hs.verdict == "conflict"             # judged on the forged value, but never shown:
    assert disagreements(pair) == ([], [])
    assert pair.r.failed is not None and pair.r.failed.step is Step.AUTHENTICATE
    assert_nothing_established(pair)


def test_a_forged_verdict_in_transit_breaks_step_three(identities):
    def wire(src, frame):
        if frame_type(frame) == "auth":
            return [rewrite(frame, ledgers="conflict")]
        return [frame]

    pair = Pair(identities[0], identities[1], i_view=Chain("a", 20, 14), r_view=Chain("a", 20, 14), wire=wire).run()
    assert pair.r.failed is not None and pair.r.failed.step is Step.AUTHENTICATE
    assert "could not prove" in pair.r.failed.reason
    assert disagreements(pair) == ([], [])
    assert_nothing_established(pair)


def test_field_bounds_a_final_block_above_the_tip_and_an_unknown_verdict_are_refused(identities):
    def above(src, frame):
        if src.name == "initiator" and frame_type(frame) == "key":
            return [rewrite(frame, final_height=21, tip_height=20)]
        return [frame]

    pair = Pair(identities[0], identities[1], wire=above).run()
    assert pair.r.failed is not None and pair.r.failed.step is Step.SWAP_KEYS
    assert "above its ledger's tip" in pair.r.failed.reason
    assert_nothing_established(pair)

    def odd(src, frame):
        return [rewrite(frame, ledgers="maybe")] if frame_type(frame) == "auth" else [frame]

    pair = Pair(identities[0], identities[1], wire=odd).run()
    assert pair.r.failed is not None and pair.r.failed.step is Step.AUTHENTICATE
    assert "unknown ledger verdict" in pair.r.failed.reason


# --- through two real chat nodes (sockets, threads): the warning on both sides, the evidence to the ledger node ---

class ReportingChain(Chain):
    """A ledger view that also takes the chat node's evidence reports (LedgerDirectory.report in the product)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)     # type: ignore[arg-type]
        self.reports: list[tuple[bytes, ChainPosition]] = []

    def report(self, peer: bytes, position: ChainPosition) -> str:
        self.reports.append((peer, position))
        return "recorded"


def test_two_nodes_whose_ledgers_disagree_both_warn_the_chat_goes_on_and_each_reports_the_peer(identities):
    with pair(identities) as (alice, bob, _):
        alice.node._rt.ledger_check = a_view = ReportingChain("a", 20, 14, fork=9)
        bob.node._rt.ledger_check = b_view = ReportingChain("b", 15, 12, fork=9)
        sid, _ = connect_all(alice, bob)
        for log, peer in ((alice.log, "bob"), (bob.log, "alice")):
            notice = log.wait(Notice, kind="ledgers")
            assert notice.text.startswith(f"Your ledger and {peer}'s disagree about final history")
            assert "cut off from the network" in notice.text and "This chat goes on" in notice.text
        alice.node.send_text(sid, "still fine")
        bob.log.wait(MessageReceived, text="still fine")
        wait_until(lambda: a_view.reports and b_view.reports, 10)
        assert a_view.reports == [(crypto.fingerprint(identities[1].public_der), b_view.position())]
        assert b_view.reports == [(crypto.fingerprint(identities[0].public_der), a_view.position())]
