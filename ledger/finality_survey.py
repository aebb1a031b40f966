"""Sans-IO core of a joining node's finality survey (``ledger join``, docs/ledger-protocol.md §4.1).

Each peer reports its newest final block ``(height, hash)``. A peer reporting a *low* final block must not lower
what is compared (before 2026-12-07 night the survey compared at the lowest height reported, so one attacker
answering "nothing final" turned the survey off for every other peer). So:

1. every peer is asked for its final block at every lower height another peer reported (it answers only where it
   is final itself);
2. two peers naming different blocks at a height both call final is a **disagreement**: the node adopts neither;
3. otherwise the checkpoint is the highest reported final block that a strict majority of the peers that
   answered vouch for (final at or above that height and naming that block there). A peer reporting nothing final
   vouches for nothing, so it cannot lower the checkpoint unless the peers that report one are not a majority.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SurveyVerdict:
    """``checkpoint`` the agreed block (None: nothing to pin), ``conflicts`` per disagreeing height the blocks named
    and by whom, ``vouchers`` who vouched for the checkpoint, ``heights`` every compared height and who said what."""

    checkpoint: tuple[int, bytes] | None
    conflicts: dict[int, dict[bytes, list[str]]]
    vouchers: list[str]
    heights: dict[int, dict[bytes, list[str]]]
    answered: int

    def listing(self, height: int) -> str:
        says = self.heights.get(height, {})
        return "; ".join(f"{', '.join(who)} say{'s' if len(who) == 1 else ''} block {height} is {h.hex()}"
                         for h, who in says.items())


@dataclass
class FinalitySurvey:
    """Collects the peers' answers (:meth:`report`, then :meth:`questions` / :meth:`answer`) and decides
    (:meth:`verdict`)."""

    finals: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _said: dict[int, dict[str, bytes]] = field(default_factory=dict)

    def report(self, peer: str, height: int, block_hash: bytes) -> None:
        """``peer``'s newest final block."""
        self.finals[peer] = (height, block_hash)
        if height > 0:
            self._said.setdefault(height, {})[peer] = block_hash

    def questions(self) -> list[tuple[str, int]]:
        """``(peer, height)``: the lower reported heights each peer is to be asked about (at most peers² of them)."""
        heights = sorted({h for h, _ in self.finals.values() if h > 0})
        return [(peer, h) for peer, (own, _) in self.finals.items() for h in heights if h < own]

    def answer(self, peer: str, height: int, block_hash: bytes | None) -> None:
        """``peer``'s final block at ``height`` (None: it did not answer, or is not final there)."""
        if block_hash is not None and self.finals.get(peer, (0, b""))[0] >= height:
            self._said.setdefault(height, {})[peer] = block_hash

    def verdict(self) -> SurveyVerdict:
        heights: dict[int, dict[bytes, list[str]]] = {}
        for h, said in sorted(self._said.items()):
            grouped: dict[bytes, list[str]] = {}
            for peer, digest in said.items():
                grouped.setdefault(digest, []).append(peer)
            heights[h] = grouped
        conflicts = {h: g for h, g in heights.items() if len(g) > 1}
        answered = len(self.finals)
        if conflicts:
            return SurveyVerdict(None, conflicts, [], heights, answered)
        for h in sorted(heights, reverse=True):
            ((digest, who),) = heights[h].items()
            if 2 * len(who) > answered:
                return SurveyVerdict((h, digest), {}, sorted(who), heights, answered)
        return SurveyVerdict(None, {}, [], heights, answered)
