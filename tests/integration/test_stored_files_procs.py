"""What the commands do with what they find on disk (red team, stored data): a directory, a link to nothing, a
damaged or foreign file where one of the data directory's files should be. Real ``p2pchat`` and ``ledger``
processes: a plain message naming the file, exit status 1 (2 for ``ledger``), no traceback, and the thing in
the way left exactly as it was — never replaced by a new key or store, never written through."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pchat.contacts import ContactStore
from p2pchat.file_resume import PendingFile, PendingFileStore
from p2pchat.foundation.identity import KEY_FILE
from p2pchat.group_store import GroupStore
from p2pchat.history import HistoryStore
from p2pchat.vault import Vault
from tests.conftest import free_loopback_ip, free_port, make_identities
from tests.helpers import wait_until
from tests.integration.procs import ROOT

FP = "ab" * 32


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["P2PCHAT_HOME"] = str(tmp_path / "no-home")
    env.pop("P2PCHAT_PASSPHRASE", None)
    env.pop("DISPLAY", None)
    return env


def run(tmp_path: Path, *args: str, module: str = "p2pchat", timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=_env(tmp_path), stdin=subprocess.DEVNULL)


def chat_data_dir(path: Path) -> Path:
    """A data directory with a key and something in every store (no passphrase)."""
    path.mkdir(mode=0o700)
    me, peer = make_identities(2)
    me.save(path / KEY_FILE)
    vault = Vault.open(path, None)
    Vault.remember_no_passphrase(path)
    contacts = ContactStore.in_data_dir(path, vault)
    contacts.record_chat(peer.public_der, peer.fingerprint, nickname="bob", ip="127.0.0.3", address="127.0.0.3:8471")
    contacts.close()
    history = HistoryStore.in_data_dir(path, vault)
    history.append(peer.fingerprint.hex(), "out", "hello", ts=time.time())
    history.close()
    groups = GroupStore.in_data_dir(path, vault)
    groups.add("read", gid=b"g" * 16, upto=1)
    groups.close()
    PendingFileStore(path / "outgoing-files.bin", vault).save(2, [PendingFile(
        ref=1, fp=peer.fingerprint.hex(), path=str(path / KEY_FILE), name="notes", size=1, sha256=bytes(32),
        mtime_ns=0, queued_at=0.0)])
    return path


def listen_args(data: Path) -> list[str]:
    ip = free_loopback_ip()
    return ["listen", "--host", ip, "--port", str(free_port(ip)), "--data-dir", str(data)]


# which command reads which file before doing anything else
COMMANDS = {
    KEY_FILE: lambda d: ["group", "list", "--data-dir", str(d)],
    "vault.json": lambda d: ["contacts", "--data-dir", str(d)],
    "contacts.sqlite3": lambda d: ["contacts", "--data-dir", str(d)],
    "history.sqlite3": lambda d: ["history", "--data-dir", str(d)],
    "groups.sqlite3": lambda d: ["group", "list", "--data-dir", str(d)],
    "outgoing-files.bin": listen_args,
}


def assert_refused(result: subprocess.CompletedProcess[str], path: Path, *words: str, status: int = 1) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert str(path) in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_directory_where_a_file_of_the_data_directory_should_be_is_refused_and_left_alone(tmp_path, name):
    data = chat_data_dir(tmp_path / "data")
    path = data / name
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("kept")
    result = run(tmp_path, *COMMANDS[name](data))
    assert_refused(result, path, "is a directory")
    assert (path / "inside").read_text() == "kept"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_link_to_nothing_where_a_file_should_be_is_refused_never_written_through_nor_replaced(tmp_path, name):
    data = chat_data_dir(tmp_path / "data")
    path = data / name
    target = tmp_path / "unmounted-drive" / name
    path.unlink()
    path.symlink_to(target)
    result = run(tmp_path, *COMMANDS[name](data))
    assert_refused(result, path, "does not exist")
    assert path.is_symlink() and os.readlink(path) == str(target)
    assert not target.exists() and not target.parent.exists()


def test_a_missing_key_behind_a_link_is_not_replaced_by_a_new_identity(tmp_path):
    """The key kept on a USB stick that is not plugged in: making a new key would be a new identity (its
    contacts' pins and its ledger record no longer match) and would hide the real key once it is back."""
    data = tmp_path / "data"
    data.mkdir()
    (data / KEY_FILE).symlink_to(tmp_path / "stick" / KEY_FILE)
    result = run(tmp_path, *listen_args(data))
    assert_refused(result, data / KEY_FILE, "does not exist", "mounted")
    assert (data / KEY_FILE).is_symlink() and not (tmp_path / "stick").exists()


@pytest.mark.parametrize("damage", ["empty", "cut", "random"])
def test_a_damaged_key_names_itself_and_how_to_move_it_aside_and_is_kept(tmp_path, damage):
    data = chat_data_dir(tmp_path / "data")
    path = data / KEY_FILE
    whole = path.read_bytes()
    damaged = {"empty": b"", "cut": whole[: len(whole) // 2], "random": os.urandom(len(whole))}[damage]
    path.write_bytes(damaged)
    result = run(tmp_path, *COMMANDS[KEY_FILE](data))
    assert_refused(result, path, "is damaged", "p2pchat did not change it", "mv ")
    assert path.read_bytes() == damaged


def test_a_data_directory_that_is_a_file_is_refused_in_plain_words(tmp_path):
    path = tmp_path / "data"
    path.write_text("not a directory")
    for args in (["contacts"], ["history"]):
        result = run(tmp_path, *args, "--data-dir", str(path))
        assert_refused(result, path, "is not a directory")
    result = run(tmp_path, "history", "--data-dir", str(path / "below"))
    assert_refused(result, path / "below", "cannot use the data directory")
    assert path.read_text() == "not a directory"


def test_a_store_others_can_read_is_made_private_again_and_the_user_told(tmp_path):
    data = chat_data_dir(tmp_path / "data")
    path = data / "history.sqlite3"
    path.chmod(0o644)
    result = run(tmp_path, "history", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert "could be read by other users (mode 644)" in result.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    again = run(tmp_path, "history", "--data-dir", str(data))
    assert again.returncode == 0 and "other users" not in again.stderr, again.stderr


def test_a_second_listener_on_one_data_directory_is_refused_and_the_first_keeps_serving(tmp_path):
    """Two processes delivering what waits in one data directory would both send each waiting text and rewrite
    the list of waiting files over each other: the second is refused, the first goes on; once the first has
    ended the directory is free again (a kill -9 frees it too: the lock is the kernel's)."""
    data = chat_data_dir(tmp_path / "data")
    first_args = listen_args(data)
    first = subprocess.Popen([sys.executable, "-m", "p2pchat", *first_args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(tmp_path))
    try:
        assert first.stdout is not None
        seen: list[str] = []

        def listening() -> bool:
            line = first.stdout.readline().decode()     # type: ignore[union-attr]
            seen.append(line)
            return "listening on" in line or first.poll() is not None
        wait_until(listening, timeout=20, what="the first listener")
        assert first.poll() is None, "".join(seen)
        before = (data / "outgoing-files.bin").read_bytes()
        second = run(tmp_path, *listen_args(data))
        assert_refused(second, data, "already running with the data directory")
        assert first.poll() is None
        assert (data / "outgoing-files.bin").read_bytes() == before
        assert "bob" in run(tmp_path, "contacts", "--data-dir", str(data)).stdout   # reading beside it is fine
    finally:
        first.kill()
        first.wait(timeout=10)
    # killed: the lock went with the process
    again = subprocess.run([sys.executable, "-m", "p2pchat", *listen_args(data)], input="/quit\n",
                           capture_output=True, text=True, timeout=30, cwd=ROOT, env=_env(tmp_path))
    assert again.returncode == 0 and "listening on" in again.stdout, again.stderr


def test_ledger_serve_refuses_a_directory_or_a_link_to_nothing_in_place_of_its_key_store_or_lock(tmp_path):
    key = make_identities(1)[0]
    cases = {"ledger-p2pchat.sqlite3": "dir", KEY_FILE: "dangling", "ledger-p2pchat.sqlite3.lock": "dir",
             "network-p2pchat.json": "dangling"}
    for name, kind in cases.items():
        data = tmp_path / f"{name}-{kind}"
        data.mkdir()
        if name != KEY_FILE:
            key.save(data / KEY_FILE)
        path = data / name
        target = tmp_path / "nowhere" / name
        if kind == "dir":
            path.mkdir()
        else:
            path.symlink_to(target)
        result = run(tmp_path, "serve", "--host", free_loopback_ip(), "--data-dir", str(data), "--difficulty", "8",
                     module="ledger")
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert str(path) in result.stderr, result.stderr
        assert path.is_dir() if kind == "dir" else (path.is_symlink() and not target.exists())


def test_a_second_ledger_node_on_one_data_directory_is_refused_and_the_first_keeps_its_store(tmp_path):
    data = tmp_path / "ledger"
    data.mkdir()
    make_identities(1)[0].save(data / KEY_FILE)
    first = subprocess.Popen([sys.executable, "-m", "ledger", "serve", "--host", free_loopback_ip(), "--data-dir",
                              str(data), "--difficulty", "8"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             cwd=ROOT, env=_env(tmp_path), text=True)
    try:
        assert first.stdout is not None
        wait_until(lambda: "network id" in first.stdout.readline() or first.poll() is not None,  # type: ignore[union-attr]
                   timeout=30, what="the first ledger node")
        assert first.poll() is None
        second = run(tmp_path, "serve", "--host", free_loopback_ip(), "--data-dir", str(data), "--difficulty", "8",
                     module="ledger")
        assert "Traceback" not in second.stderr, second.stderr
        assert second.returncode == 2 and "another ledger node is already using" in second.stderr, second.stderr
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert first.returncode == 0
    check = run(tmp_path, "verify", "--data-dir", str(data), module="ledger", timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("name", ["contacts.sqlite3", "history.sqlite3", "groups.sqlite3"])
@pytest.mark.parametrize("change", ["cut by one byte", "one page added"])
def test_a_store_whose_length_disagrees_with_its_header_is_refused(tmp_path, name, change):
    """quick_check passes a file cut inside its last page (SQLite reads the missing bytes as zeros, and a row's
    last bytes lie at the page's end): the length is checked against the header first, as the ledger does."""
    data = chat_data_dir(tmp_path / "data")
    path = data / name
    size = path.stat().st_size
    if change == "cut by one byte":
        os.truncate(path, size - 1)
    else:
        with path.open("ab") as fh:
            fh.write(bytes(4096))
    damaged = path.read_bytes()
    command = {"contacts.sqlite3": ["contacts"], "history.sqlite3": ["history"], "groups.sqlite3": ["group", "list"]}
    result = run(tmp_path, *command[name], "--data-dir", str(data))
    assert_refused(result, path, "is damaged", "bytes long, but its header says", "mv ")
    assert path.read_bytes() == damaged


def test_a_waiting_file_list_of_a_newer_format_is_refused_not_read_as_this_one(tmp_path):
    import msgpack

    data = chat_data_dir(tmp_path / "data")
    path = data / "outgoing-files.bin"
    newer = msgpack.packb({"format": 2, "next": 1, "files": []}, use_bin_type=True)
    path.write_bytes(newer)      # no passphrase here: the list is stored plain
    result = run(tmp_path, *listen_args(data))
    assert_refused(result, path, "newer p2pchat (format 2", "did not change it")
    assert path.read_bytes() == newer
