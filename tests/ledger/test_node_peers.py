"""Sans-IO peer bookkeeping: standing and bans, the rate limiter and reconnect backoff."""

from ledger.peers import (
    BAN_THRESHOLD,
    PENALTY_BAD_RECORD,
    PENALTY_INVALID_BLOCK,
    AddressBook,
    Standing,
    TokenBucket,
    backoff_delay,
)


def test_an_invalid_block_bans_the_sender_at_once_and_the_ban_expires():
    standing = Standing(ban_seconds=60)
    assert standing.penalize("10.0.0.1", PENALTY_INVALID_BLOCK, "block 3 has too little work", now=0.0)
    assert standing.ban_reason("10.0.0.1", now=30.0) == "block 3 has too little work"
    assert not standing.is_banned("10.0.0.2", now=30.0)
    assert not standing.is_banned("10.0.0.1", now=61.0)
    assert standing.points("10.0.0.1", now=61.0) == 0.0


def test_small_penalties_add_up_to_a_ban_but_decay_with_good_behaviour():
    standing = Standing()
    for _ in range(BAN_THRESHOLD // PENALTY_BAD_RECORD - 1):
        assert not standing.penalize("10.0.0.1", PENALTY_BAD_RECORD, "bad signature", now=0.0)
    # An hour later the old penalties are forgiven: one more does not ban.
    assert not standing.penalize("10.0.0.1", PENALTY_BAD_RECORD, "bad signature", now=3600.0)
    assert standing.penalize("10.0.0.1", BAN_THRESHOLD, "bad signature", now=3600.0)
    assert standing.banned(3601.0) == {"10.0.0.1": "bad signature"}


def test_standing_table_stays_bounded():
    standing = Standing(max_entries=50)
    for i in range(500):
        standing.penalize(f"10.0.{i // 250}.{i % 250}", 1, "x", now=float(i))
    assert len(standing._scores) <= 50


def test_token_bucket_allows_a_burst_then_asks_to_wait():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    wait = bucket.take(0.0)
    assert 0.09 < wait <= 0.11
    assert bucket.take(1.0) == 0.0  # refilled


def test_backoff_doubles_up_to_the_cap():
    assert backoff_delay(0) == 0.0
    assert [backoff_delay(n, base=1, cap=10) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(3, base=1, cap=10, jitter=0.99) > backoff_delay(3, base=1, cap=10)


def test_address_book_backs_off_failed_peers_and_forgets_hopeless_ones():
    book = AddressBook(own={("10.0.0.9", 8470)}, max_failures=3, base_delay=1, max_delay=8)
    assert not book.add(("10.0.0.9", 8470), 0.0)  # never dial ourselves
    book.add(("10.0.0.1", 8470), 0.0, seed=True)
    book.add(("10.0.0.2", 8470), 0.0)
    assert book.due(0.0, exclude=set()) == [("10.0.0.1", 8470), ("10.0.0.2", 8470)]
    book.attempted(("10.0.0.2", 8470), 0.0)
    assert book.due(0.0, exclude=set()) == [("10.0.0.1", 8470)]
    for t in range(3):
        book.failed(("10.0.0.2", 8470), float(t))
        book.failed(("10.0.0.1", 8470), float(t))
    assert ("10.0.0.2", 8470) not in book       # learned and hopeless: forgotten
    assert ("10.0.0.1", 8470) in book           # seeds are kept, retried later
    assert book.due(2.0, exclude=set()) == []
    assert book.due(2.0 + 4.0, exclude=set()) == [("10.0.0.1", 8470)]
    book.succeeded(("10.0.0.1", 8470), 7.0)
    assert book.info(("10.0.0.1", 8470)).failures == 0


def test_address_book_is_bounded_and_shares_good_addresses_first():
    book = AddressBook(max_size=3)
    for i in range(10):
        book.add((f"10.0.0.{i}", 8470), float(i))
    assert len(book) == 3
    book.failed(("10.0.0.0", 8470), 10.0)
    assert book.sample(2) == [("10.0.0.2", 8470), ("10.0.0.1", 8470)]


def test_an_address_no_ledger_node_can_listen_at_is_never_remembered():
    # Red team 2026-12-07 night: a peer's list of 64 such addresses went into the book, to be dialled and shared.
    book = AddressBook(own=set())
    hostile = [("0.0.0.0", 8470), ("255.255.255.255", 8470), ("224.0.0.1", 8470), ("240.1.2.3", 8470),
               ("::", 8470), ("ff02::1", 8470), ("10.0.0.1", 0), ("not an ip", 8470)]
    assert not any(book.add(addr, 0.0, source="10.0.0.66") for addr in hostile)
    fine = [("127.0.0.5", 8470), ("10.0.0.1", 8470), ("192.168.1.9", 9000), ("::1", 8470), ("fe80::1", 8470)]
    assert all(book.add(addr, 0.0, source="10.0.0.66") for addr in fine)
    assert sorted(book.due(0.0, exclude=set())) == sorted(fine)
