"""The ledger tab and the identity panel's ledger line (no Tk), the monitor thread, and how the app finds or
starts its ledger node."""

from __future__ import annotations

import pytest

from gui.demo import place_windows
from gui.lag import LagMeter, percentile
from gui.ledger_monitor import ClientSource, LedgerMonitor, NodeSource, snapshot_from_status
from gui.ledger_runtime import attach_ledger, probe
from gui.ledger_view import LedgerSnapshot, alert_text, identity_ledger_line, ledger_rows, rate_text
from p2pchat.demo_world import DemoWorld
from p2pchat.foundation.addresses import LEDGER_PORT
from tests.conftest import free_loopback_ip
from tests.gui.helpers import wait_until

STATUS = {
    "network": "demo", "difficulty_bits": 10, "height": 7, "tip": "ab" * 32, "pending": 2, "mining": True,
    "hashrate": 250_000.0, "peers": [{"address": "127.0.0.3:8470"}, {"address": "127.0.0.4:8470"}],
    "syncing": True, "sync": {"peer": "127.0.0.3:8470", "phase": "blocks", "height": 7, "target": 20},
    "own_record": {"state": "mined", "height": 4}, "registration_error": None,
}


def test_a_status_becomes_the_identity_line_and_the_ledger_rows():
    snap = snapshot_from_status(STATUS, "in this app, 127.0.0.2:8470")
    assert identity_ledger_line(snap) == ("Ledger: node running (in this app, 127.0.0.2:8470) · 2 peers · height 7 · "
                                          "your record confirmed in block 4 (4 confirmations)")
    rows = dict(ledger_rows(snap))
    assert rows["Mining"] == "mining 2 waiting records · mining speed 250.0 thousand tries a second"
    assert rows["Sync"] == "syncing from 127.0.0.3:8470: blocks, height 7 of 20 (35%)"
    assert rows["Peers"] == "127.0.0.3:8470, 127.0.0.4:8470"
    assert rows["Network"] == "demo · proof of work 10 bits"


def test_a_pending_or_missing_own_record_is_said_plainly():
    pending = snapshot_from_status({**STATUS, "own_record": {"state": "pending", "height": None}}, "x")
    assert identity_ledger_line(pending).endswith("your record waiting to be mined into a block")
    missing = snapshot_from_status({**STATUS, "own_record": None, "registration_error": "IP taken"}, "x")
    assert identity_ledger_line(missing).endswith("Not in the ledger yet")
    assert "registration refused: IP taken" in dict(ledger_rows(missing))["Sync"]


def test_an_unreachable_ledger_says_where_and_why():
    snap = LedgerSnapshot(where="127.0.0.9:8470", running=False, error="connection refused")
    assert identity_ledger_line(snap) == "Ledger: not reachable at 127.0.0.9:8470 — connection refused"
    assert ledger_rows(snap) == [("Node", "not reachable at 127.0.0.9:8470"), ("Problem", "connection refused")]
    assert identity_ledger_line(None) == "Ledger: checking…"


def test_a_malformed_status_does_not_break_the_view():
    snap = snapshot_from_status({"height": "tall", "peers": "many", "sync": 3, "own_record": [1], "hashrate": "x"},
                                "x")
    assert snap.height is None and snap.peers == () and snap.own_height is None and snap.hashrate == 0.0
    assert ledger_rows(snap)[2] == ("Height", "?")


def test_rates_and_percentiles():
    assert [rate_text(r) for r in (12, 12_345, 3_400_000)] == ["12 tries a second", "12.3 thousand tries a second",
                                                                 "3.4 million tries a second"]
    assert percentile([], 99) == 0.0
    assert percentile(range(1, 101), 99) == 99
    meter = LagMeter()
    meter.record(1.0, 1.004)
    meter.record(1.0, 0.5)          # early callbacks count as no lag
    assert meter.summary()["max_ms"] == pytest.approx(4.0)
    assert min(meter.samples) == 0.0


def test_demo_windows_fit_side_by_side_on_small_and_large_screens():
    assert place_windows(1280, 800) == ["632x740+0+20", "632x740+640+20"]
    assert place_windows(2560, 1440) == ["700x820+572+20", "700x820+1280+20"]


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory, identities):
    with DemoWorld(root=tmp_path_factory.mktemp("world"), hosts=(free_loopback_ip(), free_loopback_ip()),
                   identities=identities[:2], difficulty=8) as world:
        yield world


def test_the_monitor_reads_a_running_node_off_the_calling_thread(demo_world):
    alice = demo_world.user("alice")
    monitor = LedgerMonitor(NodeSource(alice.ledger_node), interval=0.1).start()
    try:
        wait_until(lambda: monitor.latest is not None, what="a snapshot")
        snap = monitor.take()
        assert snap is not None and snap.running and snap.height is not None and snap.height >= 1
        assert snap.own_height is not None
        assert snap.blocks and snap.blocks[-1].startswith("#0 ")
        answers: list[tuple[str, bool]] = []
        monitor.join(demo_world.user("bob").ledger_address, lambda text, ok: answers.append((text, ok)))
        wait_until(lambda: monitor.drain() or answers, what="the join answer")
        assert answers[0][1] and answers[0][0].startswith("✓ dialling")
    finally:
        monitor.close()


def test_the_monitor_reports_a_node_run_elsewhere_and_one_that_is_gone(demo_world):
    bob = demo_world.user("bob")
    reachable = ClientSource(bob.host, LEDGER_PORT, source_ip=bob.host, network=demo_world.network)
    gone_ip = free_loopback_ip()
    gone = ClientSource(gone_ip, LEDGER_PORT, source_ip=None, network=None, timeout=1.0)
    monitors = [LedgerMonitor(reachable, interval=0.1).start(), LedgerMonitor(gone, interval=0.1).start()]
    try:
        wait_until(lambda: all(m.latest is not None for m in monitors), what="both snapshots")
        assert monitors[0].latest.running and monitors[0].latest.network == demo_world.network
        assert not monitors[1].latest.running and monitors[1].latest.error
        answers: list[tuple[str, bool]] = []
        monitors[0].join("127.0.0.9", lambda text, ok: answers.append((text, ok)))
        wait_until(lambda: monitors[0].drain() or answers, what="the join answer")
        assert answers == [(f"✗ the ledger node at {bob.host}:{LEDGER_PORT} is run by another program: join "
                            "there with `ledger join 127.0.0.9`", False)]
    finally:
        for monitor in monitors:
            monitor.close()


def test_the_app_uses_a_running_ledger_node_and_starts_one_only_on_its_own_address(demo_world, tmp_path,
                                                                                       identities):
    alice = demo_world.user("alice")
    assert probe(alice.host, LEDGER_PORT, source_ip=alice.host, network=demo_world.network) is not None
    used = attach_ledger(data_dir=alice.data_dir, identity=alice.identity, host=alice.host, ledger=None,
                         network=demo_world.network, nickname="alice")
    assert not used.started_here and isinstance(used.source, ClientSource)
    used.close()

    remote = free_loopback_ip()
    elsewhere = attach_ledger(data_dir=tmp_path, identity=identities[2], host=free_loopback_ip(), ledger=remote,
                              network="p2pchat", nickname="dave")
    assert not elsewhere.started_here and elsewhere.address == f"{remote}:{LEDGER_PORT}"
    elsewhere.close()

    host = free_loopback_ip()
    own = attach_ledger(data_dir=tmp_path, identity=identities[2], host=host, ledger=None, network="guinet",
                        nickname="dave", difficulty_bits=8)
    try:
        assert own.started_here and own.address == f"{host}:{LEDGER_PORT}"
        assert probe(host, LEDGER_PORT, source_ip=host, network="guinet") is not None
    finally:
        own.close()
    assert probe(host, LEDGER_PORT, source_ip=host, network="guinet", timeout=0.5) is None


def test_an_app_started_with_join_adopts_the_seeds_network_and_syncs(demo_world, tmp_path, identities):
    host = free_loopback_ip()
    runtime = attach_ledger(data_dir=tmp_path, identity=identities[3], host=host, ledger=None,
                            network=demo_world.network, nickname="erin",
                            seeds=[demo_world.user("alice").ledger_address])
    try:
        assert runtime.started_here
        status = probe(host, LEDGER_PORT, source_ip=host, network=demo_world.network)
        assert status is not None and status["difficulty_bits"] == demo_world.difficulty
        alice_height = demo_world.user("alice").ledger.height
        wait_until(lambda: (probe(host, LEDGER_PORT, source_ip=host, network=demo_world.network) or {})
                   .get("height", -1) >= alice_height, 30, interval=0.1, what="the new node to sync")
    finally:
        runtime.close()


def test_binding_alerts_and_conflicts_become_a_banner_and_lead_the_identity_line():
    status = {**STATUS,
              "binding_alerts": [{"kind": "address", "text": "this node's address 127.0.0.5 is bound to another key"}],
              "binding_conflicts": [{"text": "key 3f2a says its binding was taken\u202e\n" + "x" * 500}, "junk"]}
    snap = snapshot_from_status(status, "x")
    assert snap.alerts[0] == "this node's address 127.0.0.5 is bound to another key"
    assert snap.alerts[1].startswith("reported by another node: key 3f2a says its binding was taken<U+202E> ")
    assert len(snap.alerts) == 2 and len(snap.alerts[1]) < 400 and "\n" not in snap.alerts[1]
    assert alert_text(snap).startswith("⚠ this node's address 127.0.0.5 is bound to another key\n⚠ reported")
    assert identity_ledger_line(snap).startswith("Ledger: ⚠ BINDING ALERT — this node's address 127.0.0.5")
    assert alert_text(snapshot_from_status(STATUS, "x")) == ""


def test_a_parked_heavier_branch_shows_as_an_alert_row_first_and_the_final_block_is_shown():
    alert = "heavier branch 00ab (height 9) forks at block 0, below final history; sent by 127.0.0.66:8470\x1b[31m"
    snap = snapshot_from_status({**STATUS, "final_height": 5, "alerts": [alert]}, "x")
    assert alert_text(snap) == ""             # a parked branch is not a binding alert: it has its own row
    rows = ledger_rows(snap)
    assert rows[0][0] == "Alert" and rows[0][1].startswith("⚠ heavier branch 00ab")
    assert "127.0.0.66:8470" in rows[0][1] and "\x1b" not in rows[0][1]   # hostile text is cleaned
    assert dict(rows)["Final"] == "block 5 and all before it"
    calm = dict(ledger_rows(snapshot_from_status({**STATUS, "final_height": 5, "alerts": []}, "x")))
    assert "Alert" not in calm


@pytest.mark.gui
def test_the_ledger_panel_shows_the_banner_only_while_there_is_an_alert(xvfb):
    import customtkinter as ctk

    from gui.widgets.ledger_panel import LedgerPanel
    from gui.widgets.style import Fonts

    root = ctk.CTk()
    try:
        panel = LedgerPanel(root, Fonts(), on_join=lambda _text: None)
        panel.pack(fill="both", expand=True)
        alerted = snapshot_from_status({**STATUS, "binding_alerts": [{"text": "this node's address is taken"}]}, "x")
        panel.show(alerted)
        root.update()
        assert panel.banner.winfo_ismapped() and panel.banner.cget("text") == "⚠ this node's address is taken"
        panel.show(snapshot_from_status(STATUS, "x"))
        root.update()
        assert not panel.banner.winfo_ismapped()
    finally:
        root.destroy()


@pytest.mark.gui
def test_the_ledger_panel_shows_the_parked_branch_alert_line_in_a_real_window(xvfb):
    import customtkinter as ctk

    from gui.widgets.ledger_panel import LedgerPanel
    from gui.widgets.style import Fonts

    root = ctk.CTk()
    try:
        panel = LedgerPanel(root, Fonts(), on_join=lambda _text: None)
        panel.pack()
        panel.show(snapshot_from_status({**STATUS, "final_height": 5, "alerts": ["heavier branch 00ab …"]}, "x"))
        root.update()
        assert panel.values["Alert"].winfo_ismapped() and "heavier branch 00ab" in panel.values["Alert"].cget("text")
        panel.show(snapshot_from_status({**STATUS, "final_height": 6, "alerts": []}, "x"))
        root.update()
        assert not panel.values["Alert"].winfo_ismapped()
    finally:
        root.destroy()


def test_confirmed_and_in_step_are_only_said_when_other_nodes_hold_the_chain():
    from gui.ledger_view import LedgerSnapshot, ledger_rows
    alone = LedgerSnapshot(where="x", running=True, height=3, tip="ab" * 32, own_height=2, own_confirmations=2)
    rows = dict(ledger_rows(alone))
    assert "confirmed" not in rows["Your record"] and "on this computer only" in rows["Your record"]
    assert rows["Sync"] == "no peers to be in step with yet"
    assert "tip" not in rows["Height"] and "last block" in rows["Height"]
    joined = LedgerSnapshot(where="x", running=True, height=3, peers=("127.0.0.3:8470",), own_height=2,
                            own_confirmations=2)
    rows = dict(ledger_rows(joined))
    assert rows["Your record"].startswith("confirmed in block 2") and rows["Sync"] == "in step with its peers"


@pytest.mark.gui
def test_an_empty_problem_row_stays_hidden_after_a_scaling_change(xvfb):
    import customtkinter as ctk

    from gui.widgets.ledger_panel import LedgerPanel
    from gui.widgets.style import Fonts

    root = ctk.CTk()
    try:
        panel = LedgerPanel(root, Fonts(), on_join=lambda _text: None)
        panel.pack(fill="both", expand=True)
        panel.show(snapshot_from_status(STATUS, "x"))       # a running node: no "Problem" row, no banner
        root.update()
        assert not panel.labels["Problem"].winfo_ismapped() and not panel.banner.winfo_ismapped()
        for scaling in (1.5, 1.0):
            ctk.set_widget_scaling(scaling)     # customtkinter re-grids what it remembers, after a moment
            deadline = 20
            while deadline:
                root.update()
                root.after(50)
                deadline -= 1
            assert not panel.labels["Problem"].winfo_ismapped() and not panel.values["Problem"].winfo_ismapped()
            assert not panel.banner.winfo_ismapped()
        panel.show(snapshot_from_status({**STATUS, "binding_alerts": [{"text": "taken"}]}, "x"))
        root.update()
        assert panel.banner.winfo_ismapped()
    finally:
        ctk.set_widget_scaling(1.0)
        root.destroy()
