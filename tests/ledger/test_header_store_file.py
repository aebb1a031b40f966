"""[redstate] What stands where the light client's header file should be: a link to nothing or a directory is
moved aside like a damaged file (docs/ledger.md "Light client: persisted headers"), never written through."""

from __future__ import annotations

from ledger.header_store import HeaderStore, header_file_path
from ledger.params import NetworkParams

PARAMS = NetworkParams(name="headerfile", difficulty_bits=8)


def test_a_link_to_nothing_is_moved_aside_not_followed(tmp_path):
    path = header_file_path(tmp_path, PARAMS, "127.0.0.1", 8470)
    target = tmp_path / "unmounted" / path.name
    path.symlink_to(target)
    store = HeaderStore(PARAMS, path)
    try:
        assert store.moved_to is not None and store.moved_to.is_symlink()
        assert "which does not exist" in (store.problem or "")
        assert not target.exists() and path.is_file() and not path.is_symlink()
    finally:
        store.close()


def test_a_directory_is_moved_aside_with_what_it_holds(tmp_path):
    path = header_file_path(tmp_path, PARAMS, "127.0.0.1", 8470)
    path.mkdir()
    (path / "kept").write_text("x")
    store = HeaderStore(PARAMS, path)
    try:
        assert store.moved_to is not None and (store.moved_to / "kept").read_text() == "x"
        assert "is a directory" in (store.problem or "") and path.is_file()
    finally:
        store.close()
