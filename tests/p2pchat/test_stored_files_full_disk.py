"""A full disk at the writers tests/p2pchat/test_store_full_disk.py and test_file_resume_full_disk.py do not
cover: the identity key (first run and saved again), the passphrase record, the window's settings, the pinned
network and a download's resume record. The "disk" is a file-size limit (RLIMIT_FSIZE) in a child process, which
gets the same refusal from the kernel as on a full disk. Each write is refused in plain words (a UserError, or
the OSError the window logs), leaves what was there and no temporary copy, and works once there is room."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, os, resource, sys
    from pathlib import Path
    from tests.conftest import make_identities
    from p2pchat.foundation.errors import UserError
    from p2pchat.foundation.identity import KEY_FILE, Identity
    from p2pchat.vault import Vault
    from p2pchat.downloads import Downloads
    from gui import settings
    from ledger.network_pin import load_pin, save_pin
    from ledger.params import NetworkParams

    base, limit = Path(sys.argv[1]), int(sys.argv[2])
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    key = make_identities(1)[0]
    params = NetworkParams(name="fulldisk", difficulty_bits=8)

    def full(fn):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            fn()
        except (UserError, OSError) as exc:
            return [type(exc).__name__, isinstance(exc, UserError), str(exc)]
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        return None

    out = {}
    d = base / "first-key"; d.mkdir()
    out["first key"] = [full(lambda: key.save_new(d / KEY_FILE)), sorted(os.listdir(d))]
    key.save_new(d / KEY_FILE)
    out["first key"].append(Identity.load(d / KEY_FILE).fingerprint == key.fingerprint)

    d = base / "key-again"; d.mkdir(); key.save(d / KEY_FILE); before = (d / KEY_FILE).read_bytes()
    out["key again"] = [full(lambda: key.save(d / KEY_FILE, "a passphrase")), sorted(os.listdir(d)),
                        (d / KEY_FILE).read_bytes() == before]

    d = base / "vault"; d.mkdir()
    out["vault"] = [full(lambda: Vault.open(d, "a passphrase", scrypt_n=1 << 10)), sorted(os.listdir(d))]
    out["vault"].append(Vault.open(d, "a passphrase", scrypt_n=1 << 10).encrypted)

    d = base / "window"; d.mkdir(); settings.save(d, settings.Settings(width=800))
    big = settings.Settings(width=900, appearance="Dark")
    out["window"] = [full(lambda: settings.save(d, big)), sorted(os.listdir(d)), settings.load(d).width]
    settings.save(d, big)
    out["window"].append(settings.load(d).width)

    d = base / "pin"; d.mkdir()
    out["pin"] = [full(lambda: save_pin(d, params)), sorted(os.listdir(d))]
    save_pin(d, params)
    out["pin"].append(load_pin(d, "fulldisk") == params)

    d = base / "download"; d.mkdir()
    downloads = Downloads(d, max_size=1 << 20)
    out["download"] = [full(lambda: downloads.open("ab" * 32, "notes.txt", bytes(32), 1000)),
                       sorted(p.name for p in (d / ".partial").iterdir()) if (d / ".partial").exists() else []]
    print(json.dumps(out))
""")


def test_a_full_disk_at_each_small_writer_is_refused_in_plain_words_and_leaves_no_temporary_copy(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), "64"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    error, files, loaded = out["first key"]
    assert error[1] and "could not write the identity key" in error[2], error
    assert files == [] and loaded       # nothing half-written; made once there is room

    error, files, same = out["key again"]
    assert error[1] and "could not write the identity key" in error[2], error
    assert files == ["identity.pem"] and same

    error, files, encrypted = out["vault"]
    assert error[1] and "cannot write" in error[2] and "vault.json" in error[2], error
    assert files == [] and encrypted

    error, files, width, width_after = out["window"]
    assert error[0] == "OSError", error                 # the window logs it (gui/app.py, gui/window.py)
    assert files == ["gui.json"] and width == 800 and width_after == 900

    error, files, same = out["pin"]
    assert error[1] and "could not write the pinned network id" in error[2], error
    assert files == [] and same

    error, files = out["download"]
    assert error is not None and error[1], error
    assert "download" in error[2] or "downloads folder" in error[2], error
