"""Step 1's ``features`` (docs/protocol.md §3.1, §3.5): announced both ways, hashed only when both frames carry
them, so a node built before them still completes the four steps, and a man in the middle who adds or strips them
on one frame breaks step 3."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from p2pchat.chat_protocol import CHAT, FEATURE_FILE_ROOT, FEATURES
from p2pchat.foundation.errors import FrameError
from p2pchat.steps import Step
from tests.p2pchat.handshake_pair import Pair, Side, decode


def frames(pair: Pair, kind: str) -> list[Any]:
    return [decode(f) for _, f in pair.log if decode(f).type == kind]


def rewrite_hello(frame: bytes, kind: str, **changes: Any) -> bytes:
    """The frame with some fields changed (``None`` drops one): what an active attacker on the wire can do."""
    msg = decode(frame)
    if msg.type != kind:
        return frame
    fields = {k: v for k, v in {**msg.fields, **changes}.items() if v is not None}
    return CHAT.encode(msg.type, **fields)


def test_both_sides_announce_their_features_and_each_learns_the_others(identities):
    pair = Pair(identities[0], identities[1]).run()
    est_i, est_r = pair.i.established, pair.r.established
    assert est_i is not None and est_r is not None
    assert est_i.peer_features == est_r.peer_features == frozenset({FEATURE_FILE_ROOT})
    assert frames(pair, "hello")[0]["features"] == frames(pair, "welcome")[0]["features"] == list(FEATURES)


@pytest.mark.parametrize("old", ["initiator", "responder"])
def test_a_peer_built_before_features_completes_the_four_steps_and_is_taken_to_have_none(identities, old):
    pair = Pair(identities[0], identities[1], **{f"{old[0]}_features": None}).run()
    est_i, est_r = pair.i.established, pair.r.established
    assert est_i is not None and est_r is not None, (pair.i.failed, pair.r.failed)
    assert est_i.transcript_hash == est_r.transcript_hash
    assert est_i.peer_features == est_r.peer_features == frozenset()
    # the old side sent no field; the new one sent its own whatever the other did (an old node ignores it)
    sent = {"initiator": frames(pair, "hello")[0], "responder": frames(pair, "welcome")[0]}
    assert sent[old].get("features") is None
    assert sent["responder" if old == "initiator" else "initiator"]["features"] == list(FEATURES)


def test_unknown_feature_names_are_ignored_but_still_bound(identities):
    pair = Pair(identities[0], identities[1], i_features=("file-root", "something-later")).run()
    est_r = pair.r.established
    assert est_r is not None and est_r.peer_features == frozenset({"file-root", "something-later"})


@pytest.mark.parametrize(("kind", "change"), [
    ("hello", None),                        # stripped from the hello: the responder takes the caller for old
    ("welcome", None),                      # stripped from the welcome
    ("hello", ["file-root", "x"]),          # changed on the way
    ("welcome", []),
])
def test_features_changed_on_one_frame_break_step_3(identities, kind, change):
    def wire(src: Side, frame: bytes) -> list[bytes]:
        return [rewrite_hello(frame, kind, features=change)]

    pair = Pair(identities[0], identities[1], wire=wire).run()
    assert pair.i.established is None and pair.r.established is None
    failed = pair.i.failed or pair.r.failed
    assert failed is not None and failed.step == Step.AUTHENTICATE


def test_features_added_to_an_old_peers_frame_break_step_3(identities):
    """An attacker who makes an old responder look like a new one (to make the caller offer roots it cannot
    check) changes only the welcome: the old responder hashed no features, the caller does."""
    pair = Pair(identities[0], identities[1], r_features=None,
                wire=lambda src, f: [rewrite_hello(f, "welcome", features=list(FEATURES))]).run()
    assert pair.i.established is None and pair.r.established is None
    failed = pair.i.failed or pair.r.failed
    assert failed is not None and failed.step == Step.AUTHENTICATE


def test_features_stripped_from_both_frames_only_make_each_side_treat_the_other_as_old(identities):
    pair = Pair(identities[0], identities[1],
                wire=lambda src, f: [rewrite_hello(rewrite_hello(f, "hello", features=None), "welcome",
                                                   features=None)]).run()
    est_i, est_r = pair.i.established, pair.r.established
    assert est_i is not None and est_r is not None
    assert est_i.peer_features == est_r.peer_features == frozenset()


def test_a_features_list_out_of_bounds_is_refused_by_the_schema():
    base = {"version": 2, "network": "n", "nickname": "a", "address": ""}
    CHAT.encode("hello", **base, features=["a" * 32] * 16)
    for bad in (["a" * 33], ["x"] * 17, [""], [1], "file-root"):
        body = msgpack.packb({"t": "hello", **base, "features": bad}, use_bin_type=True)
        with pytest.raises(FrameError, match="features"):
            CHAT.decode(body)
