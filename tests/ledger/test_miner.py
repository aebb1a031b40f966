"""The proof-of-work search and the mining thread."""

import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_kit import PARAMS, T0, wait_until

from ledger.blocks import Block, BlockHeader
from ledger.miner import Miner, mine


def _header(bits=8, nonce=0):
    return BlockHeader(version=1, network_id=PARAMS.network_id, height=1, prev_hash=PARAMS.genesis_hash,
                       merkle_root=b"\x00" * 32, timestamp=T0, target_bits=bits, nonce=nonce)


def test_mine_finds_a_nonce_that_meets_the_target():
    solved = mine(_header(), threading.Event())
    assert solved is not None and solved.meets_target()
    again = mine(_header(nonce=solved.nonce + 1), threading.Event())
    assert again is not None and again.nonce > solved.nonce and again.meets_target()
    # Every nonce before the solution misses the target: the search is exhaustive, in order.
    assert not any(_header(nonce=n).meets_target() for n in range(solved.nonce))


@settings(max_examples=40, deadline=None)
@given(start=st.one_of(st.integers(0, 5000), st.integers(2**64 - 3000, 2**64 - 1)), batch=st.integers(1, 700))
def test_mine_returns_the_first_solution_at_or_after_the_start_nonce(start, batch):
    solved = mine(_header(nonce=start), threading.Event(), batch=batch)
    end = solved.nonce if solved is not None else 2**64
    assert not any(_header(nonce=n).meets_target() for n in range(start, end))
    if solved is not None:
        assert solved.nonce >= start and solved.meets_target()


def test_mine_stops_when_asked_or_after_max_hashes():
    stop = threading.Event()
    stop.set()
    assert mine(_header(bits=60), stop) is None
    counted = []
    assert mine(_header(bits=60, nonce=77), threading.Event(), batch=1000, progress=counted.append,
                max_hashes=5500) is None
    assert sum(counted) == 5500 and counted[0] == 1000


def test_mine_gives_up_at_the_end_of_the_nonce_space():
    assert mine(_header(bits=60, nonce=2**64 - 10), threading.Event()) is None


class _Templates:
    """A template source the test switches between 'nothing pending', 'unsolvable' and 'easy'."""

    def __init__(self):
        self.block = None
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.block


def test_the_miner_idles_without_records_and_mines_when_woken():
    templates, found = _Templates(), []
    miner = Miner(templates, found.append)
    miner.start()
    try:
        assert wait_until(lambda: templates.calls == 1)
        assert not miner.mining and found == []
        templates.block = Block(_header(), ())
        miner.wake()
        assert wait_until(lambda: len(found) >= 1)
        assert found[0].header.meets_target() and miner.blocks_found >= 1
    finally:
        miner.close()
    assert not miner._thread.is_alive()


def test_a_wake_abandons_the_current_attempt_at_once():
    templates, found = _Templates(), []
    templates.block = Block(_header(bits=60), ())  # never solvable here
    miner = Miner(templates, found.append, batch=512)
    miner.start()
    try:
        assert wait_until(lambda: miner.mining)
        templates.block = Block(_header(bits=8), ())
        miner.wake()
        assert wait_until(lambda: len(found) >= 1)
        assert found[0].header.target_bits == 8
    finally:
        miner.close()


def test_close_stops_a_busy_miner():
    templates = _Templates()
    templates.block = Block(_header(bits=60), ())
    rates = []
    miner = Miner(templates, lambda block: None, on_rate=rates.append, batch=512)
    miner.start()
    assert wait_until(lambda: miner.mining)
    assert wait_until(lambda: rates, timeout=5)
    assert rates[0] > 0
    miner.close()
    assert not miner._thread.is_alive() and not miner.mining
