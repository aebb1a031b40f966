"""Crypto review, 2026-12-07 night (docs/security.md): how the project uses its cryptography.

Each test pins one class of mistake found or checked by the review: key material in ``repr``s, identity key
files that the network would refuse, signature contexts that could run into their data, the passphrase KDF of
the key file, crypto done outside the one crypto module, and the channel's counter and epoch limits.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from p2pchat.foundation import crypto
from p2pchat.foundation.errors import CryptoError, IdentityError
from p2pchat.foundation.identity import Identity

ROOT = Path(__file__).resolve().parents[2]


# --- key material never in a repr --------------------------------------------------------------------------------

def _secret_bytes(tag: int) -> bytes:
    return bytes([tag]) * 32


def test_the_handshakes_key_objects_do_not_show_their_keys_in_repr(identities):
    from p2pchat import handshake as hs

    keys = hs.SessionKeys(*(_secret_bytes(i) for i in range(1, 6)))
    binding = hs.LedgerBinding(identities[1].public_der, "bob", "127.0.0.2", 5000, None, 3, 2)
    est = hs.Established(True, _secret_bytes(1), _secret_bytes(2), _secret_bytes(3), _secret_bytes(4),
                         b"\x77" * 32, identities[1].public_der, "bob", binding, "12345")
    for obj in (keys, est):
        text = repr(obj)
        for i in range(1, 6):
            assert repr(_secret_bytes(i)) not in text, f"{type(obj).__name__}'s repr shows a key"
            assert _secret_bytes(i).hex() not in text
    assert "bob" in repr(est)      # the rest is still there to debug with


def test_the_channels_sides_and_the_vault_do_not_show_keys_in_repr(identities, tmp_path):
    from p2pchat import channel as ch
    from p2pchat.vault import Vault

    send = ch._SendSide(b"i2r", _secret_bytes(1), _secret_bytes(2))
    recv = ch._RecvSide(b"r2i", _secret_bytes(3), _secret_bytes(4))
    vault = Vault.open(tmp_path, "a passphrase", scrypt_n=1 << 4)
    for obj in (send, recv, vault, identities[0], crypto.EphemeralKey(_secret_bytes(9))):
        text = repr(obj)
        for i in (1, 2, 3, 4, 9):
            assert repr(_secret_bytes(i)) not in text and _secret_bytes(i).hex() not in text


# --- identity keys from disk: the same rules as keys from the network --------------------------------------------

def _with_exponent(ident: Identity, e: int) -> crypto.RsaKey:
    """The test identity's primes under another public exponent (instant, unlike generating a key)."""
    from Crypto.PublicKey import RSA

    key = ident._key
    p, q = int(key.p), int(key.q)
    lam = (p - 1) * (q - 1)
    d = pow(e, -1, lam)
    return RSA.construct((p * q, e, d, p, q))


def test_an_identity_key_file_with_an_exponent_peers_refuse_is_refused_on_load(identities, tmp_path):
    tried = 0
    for e in (3, 5, 17, 257):
        try:
            key = _with_exponent(identities[2], e)
        except ValueError:          # e shares a factor with (p - 1)(q - 1): no such key for these primes
            continue
        path = tmp_path / f"identity-{e}.pem"
        path.write_bytes(key.export_key(format="PEM", pkcs=8))
        os.chmod(path, 0o600)
        with pytest.raises(IdentityError, match="65537"):
            Identity.load(path)
        with pytest.raises(CryptoError, match="65537"):
            crypto.import_private(path.read_bytes())
        tried += 1
    assert tried >= 2


def test_an_identity_key_file_of_2048_bits_is_refused_on_load(tmp_path):
    from Crypto.PublicKey import RSA

    path = tmp_path / "identity.pem"
    path.write_bytes(RSA.generate(2048).export_key(format="PEM", pkcs=8))
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="2048 bits is refused"):
        Identity.load(path)


def test_a_loaded_identity_key_round_trips_and_its_public_half_passes_the_network_rules(identities, tmp_path):
    path = tmp_path / "identity.pem"
    identities[0].save(path)
    loaded = Identity.load(path)
    assert loaded.public_der == identities[0].public_der
    crypto.load_public(loaded.public_der)


def _pbes2_scrypt_params(pem: bytes) -> tuple[int, int, int, int]:
    """(salt length, N, r, p) of an encrypted PKCS#8 PEM (RFC 8018 PBES2 with scrypt, RFC 7914 §7)."""
    from Crypto.IO import PEM
    from Crypto.Util.asn1 import DerObjectId, DerOctetString, DerSequence

    der, marker, _ = PEM.decode(pem.decode("ascii"))
    assert marker == "ENCRYPTED PRIVATE KEY"
    algorithm = DerSequence().decode(DerSequence().decode(der)[0])
    assert DerObjectId().decode(algorithm[0]).value == "1.2.840.113549.1.5.13"       # PBES2
    kdf = DerSequence().decode(DerSequence().decode(algorithm[1])[0])
    assert DerObjectId().decode(kdf[0]).value == "1.3.6.1.4.1.11591.4.11"           # scrypt
    params = DerSequence().decode(kdf[1])
    salt = DerOctetString().decode(params[0]).payload
    return len(salt), int(params[1]), int(params[2]), int(params[3])


def test_a_passphrase_protected_key_file_costs_an_attacker_what_the_vault_costs(identities):
    from p2pchat import vault

    salt_len, n, r, p = _pbes2_scrypt_params(identities[0].to_pem("correct horse"))
    assert salt_len >= 16
    assert (n, r, p) == (vault.SCRYPT_N, vault.SCRYPT_R, vault.SCRYPT_P) == (crypto.SCRYPT_N, 8, 1)


# --- signature contexts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("context", ["", "a\x00b", "Chat-Auth", "chat auth", "é", "x" * 65])
def test_a_signature_context_that_could_run_into_its_data_is_refused(identities, context):
    with pytest.raises(ValueError, match="context"):
        crypto.sign(identities[0]._key, context, b"data")
    with pytest.raises(ValueError, match="context"):
        crypto.verify(identities[0].public_der, context, b"data", b"\x00" * 384)


def test_every_signature_context_of_the_project_is_distinct_and_well_formed():
    from ledger import protocol as ledger_protocol
    from ledger import records
    from p2pchat import groups, handshake
    from p2pchat.relay import protocol as relay_protocol

    contexts = [records.SIGN_CONTEXT, ledger_protocol.REACHABILITY_CONTEXT, handshake.AUTH_CONTEXT,
                relay_protocol.LOGIN_CONTEXT, groups.SIGN_CONTEXT]
    assert len(set(contexts)) == len(contexts)
    assert set(contexts) == crypto.SIGNATURE_CONTEXTS
    for context in contexts:
        crypto.check_context(context)


def test_a_handshake_signature_does_not_verify_as_any_other_signature(identities):
    a = identities[0]
    sig = a.sign("chat-auth", b"same bytes")
    for other in crypto.SIGNATURE_CONTEXTS - {"chat-auth"}:
        assert not crypto.is_valid_signature(a.public_der, other, b"same bytes", sig)


# --- crypto only in the crypto module ----------------------------------------------------------------------------

# hashlib outside crypto.py, each for a reason: the ledger's proof of work and Merkle trees hash millions of
# times (a call through crypto.sha256 costs measurably, bench/), and file digests stream gigabytes over threads.
HASHLIB_ALLOWED = {"ledger/miner.py", "ledger/blocks.py", "ledger/merkle.py", "p2pchat/file_digest.py",
                   "p2pchat/downloads.py"}
FORBIDDEN_MODULES = {"hmac", "secrets", "random", "Crypto", "Cryptodome", "cryptography", "nacl"}
# pycryptodome's names that crypto.py holds: reaching them as ``crypto.RSA`` etc. is crypto outside the module
PYCRYPTODOME_NAMES = {"AES", "SHA256", "ECC", "RSA", "pss", "HKDF", "Integer", "import_x25519_private_key",
                      "import_x25519_public_key", "key_agreement"}


def _project_modules() -> list[Path]:
    return [p for pkg in ("p2pchat", "ledger", "gui") for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_no_module_but_the_crypto_module_does_crypto_or_draws_randomness():
    problems = []
    for path in _project_modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("p2pchat/foundation/crypto.py", "p2pchat/foundation/_lazy_pycryptodome.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in FORBIDDEN_MODULES or (top == "hashlib" and rel not in HASHLIB_ALLOWED):
                    problems.append(f"{rel}:{node.lineno} imports {name}")
            if (isinstance(node, ast.Attribute) and node.attr == "urandom" and isinstance(node.value, ast.Name)
                    and node.value.id == "os"):
                problems.append(f"{rel}:{node.lineno} calls os.urandom (use crypto.random_bytes)")
            if (isinstance(node, ast.Attribute) and node.attr in PYCRYPTODOME_NAMES and isinstance(node.value, ast.Name)
                    and node.value.id == "crypto"):
                problems.append(f"{rel}:{node.lineno} uses pycryptodome's {node.attr} through crypto.py")
    assert problems == []


# --- the channel's limits: counter 2^64 and epoch 2^32 -----------------------------------------------------------

def _channel_pair():
    from p2pchat import channel as ch
    from p2pchat import handshake as hs

    k = [_secret_bytes(i) for i in range(1, 5)]
    binding = hs.LedgerBinding(b"", "peer", None, None, None, 0, 0)

    def est(initiator: bool) -> hs.Established:
        keys = (k[0], k[1], k[2], k[3]) if initiator else (k[1], k[0], k[3], k[2])
        return hs.Established(initiator, *keys, b"\x55" * 32, b"", "peer", binding, "0")

    return ch.Channel(est(True)), ch.Channel(est(False))


def _texts(events: list[object]) -> list[str]:
    return [e.text for e in events if type(e).__name__ == "Text"]      # type: ignore[attr-defined]


def test_the_last_counter_is_used_once_and_then_sending_stops_with_a_reason():
    from p2pchat.channel import ChannelError
    from p2pchat.chat_protocol import CHAT, MAX_COUNTER

    a, b = _channel_pair()
    a._send.counter = MAX_COUNTER
    b._recv.last_counter = MAX_COUNTER - 1
    _, frames = a.send_text("the last one", 1.0)
    assert _texts(b.receive(CHAT.decode(bytes(frames[0])[4:]))) == ["the last one"]
    with pytest.raises(ChannelError, match="reconnect"):
        a.send_text("one too many", 2.0)


def test_at_the_last_epoch_the_sender_stops_where_the_receiver_would_refuse_and_asks_for_a_reconnect():
    from p2pchat.channel import ChannelError
    from p2pchat.chat_protocol import CHAT, MAX_EPOCH, MAX_ROTATE_EVERY

    a, b = _channel_pair()
    a._send.epoch = b._recv.epoch = MAX_EPOCH
    a._send.texts_in_epoch = b._recv.texts_in_epoch = MAX_ROTATE_EVERY - 1
    _, frames = a.send_text("the last text under the last key", 1.0)
    assert [type(f).__name__ for f in frames] == ["BoxedFrame"]         # no rotation past the last epoch
    assert _texts(b.receive(CHAT.decode(bytes(frames[0])[4:]))) == ["the last text under the last key"]
    with pytest.raises(ChannelError, match="reconnect"):
        a.send_text("one too many", 2.0)


# --- PSS parameters: salt length and MGF are fixed, not whatever a signer chose ---------------------------------

@pytest.mark.parametrize("salt_bytes", [0, 20, 64])
def test_a_pss_signature_with_another_salt_length_does_not_verify(identities, salt_bytes):
    from Crypto.Hash import SHA256
    from Crypto.Signature import pss

    a = identities[0]
    message = SHA256.new(crypto.DOMAIN + b"chat-auth\x00" + b"data")
    sig = pss.new(a._key, salt_bytes=salt_bytes).sign(message)
    pss.new(a._key.public_key(), salt_bytes=salt_bytes).verify(message, sig)     # a valid PSS signature ...
    assert not crypto.is_valid_signature(a.public_der, "chat-auth", b"data", sig)  # ... but not ours


def test_a_pss_signature_with_mgf1_sha1_or_a_sha1_digest_does_not_verify(identities):
    from Crypto.Hash import SHA1, SHA256
    from Crypto.Signature import pss
    from Crypto.Signature.pss import MGF1

    a = identities[0]
    data = crypto.DOMAIN + b"chat-auth\x00" + b"data"
    sha1_mgf = pss.new(a._key, mask_func=lambda seed, n: MGF1(seed, n, SHA1)).sign(SHA256.new(data))
    sha1_digest = pss.new(a._key).sign(SHA1.new(data))
    for sig in (sha1_mgf, sha1_digest):
        assert not crypto.is_valid_signature(a.public_der, "chat-auth", b"data", sig)
    good = a.sign("chat-auth", b"data")
    for bad in (good[:-1], good + b"\x00", b"\x00" + good[1:], (int.from_bytes(good, "big") + int(a._key.n))
                .to_bytes(len(good) + 1, "big")):
        assert not crypto.is_valid_signature(a.public_der, "chat-auth", b"data", bad)


def test_a_key_file_under_an_older_librarys_weaker_scrypt_is_strengthened_when_the_vault_opens(identities, tmp_path):
    from p2pchat.vault import Vault

    path = tmp_path / "identity.pem"
    weak = identities[3]._key.export_key(format="PEM", pkcs=8, passphrase="correct horse",
                                         protection="scryptAndAES256-GCM",
                                         prot_params={"iteration_count": 1 << 14, "salt_size": 8})
    path.write_bytes(weak)
    os.chmod(path, 0o600)
    assert _pbes2_scrypt_params(weak)[:2] == (8, 1 << 14)
    assert crypto.private_pem_weaker_than_policy(weak)
    assert not crypto.private_pem_weaker_than_policy(identities[3].to_pem("correct horse"))
    assert not crypto.private_pem_weaker_than_policy(identities[3].to_pem())

    Vault.open(tmp_path, "correct horse", scrypt_n=1 << 4)
    assert _pbes2_scrypt_params(path.read_bytes()) == (16, crypto.SCRYPT_N, 8, 1)
    assert Identity.load(path, "correct horse").public_der == identities[3].public_der
    assert os.stat(path).st_mode & 0o077 == 0

    path.write_bytes(weak)          # and when the directory had its passphrase already (the record exists)
    Vault.open(tmp_path, "correct horse", scrypt_n=1 << 4)
    assert _pbes2_scrypt_params(path.read_bytes()) == (16, crypto.SCRYPT_N, 8, 1)


# --- core dumps ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="core dump limits are POSIX")
def test_a_process_that_loads_its_identity_key_writes_no_core_dump(identities, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "identity.pem"
    identities[4].save(path)
    script = ("import resource, sys\nfrom pathlib import Path\nfrom p2pchat.foundation.identity import Identity\n"
              "soft, hard = resource.getrlimit(resource.RLIMIT_CORE)\n"
              "resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))   # as a shell with ulimit -c unlimited\n"
              "print(*resource.getrlimit(resource.RLIMIT_CORE))\n"
              "Identity.load(Path(sys.argv[1]))\n"
              "print(*resource.getrlimit(resource.RLIMIT_CORE))\n")
    _, after = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                                   timeout=60, cwd=ROOT, check=True).stdout.splitlines()
    assert after == "0 0"         # soft and hard: nothing in the process can turn core dumps back on


# --- private keys at rest: mode 0600 ---------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_relay_key_file_others_can_read_is_refused_like_an_identity_key(tmp_path, mode):
    from p2pchat.foundation.errors import UserError
    from p2pchat.relay.secure import RelayKey

    path = tmp_path / "relay_key"
    key = RelayKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, mode)
    with pytest.raises(UserError, match="chmod 600"):
        RelayKey.load_or_create(path)
    assert path.read_text().strip() == key._private.hex()        # not replaced
    os.chmod(path, 0o600)
    assert RelayKey.load_or_create(path).public == key.public


def test_the_stores_sealing_labels_are_distinct_and_prefix_free():
    """One vault key seals every store's values: each store's AAD label must tell its values from every other's."""
    from p2pchat import contacts, file_resume, group_store, history

    labels = [contacts._AAD, file_resume._AAD, group_store._AAD, history._AAD_PEER, history._AAD_MESSAGE]
    for i, a in enumerate(labels):
        assert a.endswith(b"\x00")
        for b in labels[i + 1:]:
            assert not a.startswith(b) and not b.startswith(a), (a, b)


def test_every_hkdf_label_names_one_purpose():
    """Keys derived for one purpose (session keys, the ratchet, the relay link and pair records, the vault) never
    equal keys for another, even from the same secret: their HKDF infos are distinct and none a prefix of another
    (the ratchet appends direction and epoch, the relay link its two purposes)."""
    from p2pchat import channel, chat_protocol, handshake, vault

    infos = [handshake.KEYS_INFO, channel.RATCHET_INFO + chat_protocol.DIRECTION_I2R,
             channel.RATCHET_INFO + chat_protocol.DIRECTION_R2I, crypto.RELAY_LINK_CONTEXT + b"keys",
             crypto.RELAY_LINK_CONTEXT + b"pair", vault._KEYS_INFO]
    for i, a in enumerate(infos):
        for b in infos[i + 1:]:
            assert not a.startswith(b) and not b.startswith(a), (a, b)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_pad_half_others_can_read_is_not_used(tmp_path):
    from p2pchat.pad import HALF_A, Pad, PadError, create_pad, import_pad, pads_dir

    alice, bob = crypto.sha256(b"alice"), crypto.sha256(b"bob")
    _, mine, _ = create_pad(alice, bob, 4096, tmp_path / "out")
    import_pad(mine, tmp_path / "alice", alice)
    installed = pads_dir(tmp_path / "alice") / bob.hex()
    assert (installed / HALF_A).stat().st_mode & 0o777 == 0o600
    Pad(installed, alice)
    os.chmod(installed / HALF_A, 0o644)
    with pytest.raises(PadError, match="chmod 600"):
        Pad(installed, alice)


@pytest.mark.skipif(os.name != "posix", reason="core dump limits are POSIX")
def test_a_keygen_worker_writes_no_core_dump_while_it_holds_the_new_key():
    import subprocess
    import sys

    # the prime search itself is replaced (its time has a long tail; what is tested is the limit it runs under)
    script = ("import resource\nimport Crypto.PublicKey.RSA as rsa\nfrom p2pchat.foundation import crypto\n"
              "rsa.generate = lambda bits, e: print(*resource.getrlimit(resource.RLIMIT_CORE))\n"
              "hard = resource.getrlimit(resource.RLIMIT_CORE)[1]\n"
              "resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))\n"
              "crypto.generate_rsa(3072)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         check=True).stdout.strip()
    assert out == "0 0"
