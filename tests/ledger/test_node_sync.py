"""Sans-IO sync pieces: the progress a sync reports and the light client's verified header chain."""

import dataclasses

import pytest
from gossip_kit import PARAMS, next_block

from ledger.errors import LedgerError
from ledger.sync import HeaderChain, SyncProgress

T = 1_700_000_000


def headers_on(parent, n, start, params=PARAMS):
    out = []
    for i in range(n):
        out.append(next_block(out[-1] if out else parent, (), start + i, params).header)
    return out


def test_progress_describes_itself():
    p = SyncProgress("10.0.0.1:8470", "headers", 250, 1000)
    assert p.fraction == 0.25 and "250 of 1000 (25%)" in p.describe()
    blocks = SyncProgress("10.0.0.1:8470", "blocks", 12_000, 100_000, peers=3, rate=2_700.4)
    assert blocks.describe().startswith("blocks 12,000 of 100,000 from 3 peers, 2,700/s")
    assert SyncProgress("x", "done", 7, 7).describe() == "in sync with x at height 7"


def test_header_chain_accepts_a_valid_chain_from_genesis():
    chain = HeaderChain(PARAMS)
    headers = headers_on(PARAMS.genesis().header, 5, T)
    assert chain.extend(headers, T + 10) == (0, 5)
    assert chain.tip == headers[-1] and chain.confirmations(3) == 3
    assert chain.height_of(headers[2].hash) == 3 and chain.locator()[-1] == PARAMS.genesis_hash
    assert chain.work == 5 * 2**8


@pytest.mark.parametrize("change, reason", [
    ({"target_bits": 7}, "requires 8"),
    ({"version": 2}, "ledger version 2"),
    ({"network_id": bytes(32)}, "another network"),
])
def test_header_chain_refuses_headers_that_break_network_rules(change, reason):
    genesis = PARAMS.genesis().header
    bad = next_block(genesis, (), T).header
    bad = dataclasses.replace(bad, **change)
    with pytest.raises(LedgerError, match=reason):
        HeaderChain(PARAMS).extend([bad], T + 10)


def test_header_chain_refuses_bad_work_linkage_and_times():
    genesis = PARAMS.genesis().header
    good = headers_on(genesis, 12, T)
    weak = dataclasses.replace(good[0], nonce=good[0].nonce + 1)
    while weak.meets_target():
        weak = dataclasses.replace(weak, nonce=weak.nonce + 1)
    with pytest.raises(LedgerError, match="too little proof of work"):
        HeaderChain(PARAMS).extend([weak], T + 100)
    with pytest.raises(LedgerError, match="does not link"):
        HeaderChain(PARAMS).extend([good[0], good[2]], T + 100)
    with pytest.raises(LedgerError, match="s in the future"):
        HeaderChain(PARAMS).extend(good, T - 1000)
    chain = HeaderChain(PARAMS)
    chain.extend(good, T + 100)
    old = next_block(good[-1], (), T + 2).header  # before the median of the last 11
    with pytest.raises(LedgerError, match="before the median"):
        chain.extend([old], T + 100)
    orphan = headers_on(good[-1], 2, T + 20)[1:]
    with pytest.raises(LedgerError, match="does not know"):
        chain.extend(orphan, T + 100)


def test_header_chain_follows_a_branch_only_with_more_work_or_equal_work_and_a_lower_tip_hash():
    genesis = PARAMS.genesis().header
    main = headers_on(genesis, 4, T)
    chain = HeaderChain(PARAMS)
    chain.extend(main, T + 100)
    short = headers_on(main[1], 2, T + 50)  # fork at height 2, same height 4: equal work
    assert chain.extend(short, T + 100) == (2, 4)
    assert chain.tip == min(main[-1], short[-1], key=lambda h: h.hash)  # the node's tie-break
    longer = headers_on(main[1], 3, T + 60)
    assert chain.extend(longer, T + 100) == (2, 5)
    assert chain.tip == longer[-1] and chain.height_of(main[-1].hash) is None
