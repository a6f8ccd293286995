from __future__ import annotations

import os
from pathlib import Path

import pytest
from eth_account import Account

from keeperd.config import EnvKey, FileKey, KeystoreKey
from keeperd.keys import KeyLoadError, load_key

SECRET = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_env_key_loads_and_never_shows_itself() -> None:
    key = load_key(EnvKey(source="env", env="K"), {"K": SECRET})
    assert key.address == ADDRESS
    for text in (repr(key), str(key), f"{key}"):
        assert SECRET[2:] not in text.lower()


def test_missing_or_malformed_env_key_is_explained_without_the_value() -> None:
    with pytest.raises(KeyLoadError, match=r"variable K \(keeper.key.env\) is not set"):
        load_key(EnvKey(source="env", env="K"), {})
    with pytest.raises(KeyLoadError) as info:
        load_key(EnvKey(source="env", env="K"), {"K": "0xnot-a-key-but-secret-looking"})
    assert "not-a-key" not in str(info.value)
    assert info.value.__cause__ is None


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keeper.key"
    path.write_text(SECRET + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(KeyLoadError, match="chmod 600"):
        load_key(FileKey(source="file", path=path))
    os.chmod(path, 0o600)
    assert load_key(FileKey(source="file", path=path)).address == ADDRESS


def test_encrypted_keystore_with_password_file(tmp_path: Path) -> None:
    store = tmp_path / "keystore.json"
    password = tmp_path / "password"
    import json

    store.write_text(json.dumps(Account.encrypt(SECRET, "hunter2", iterations=2)))
    password.write_text("hunter2\n")
    os.chmod(password, 0o600)
    key = load_key(KeystoreKey(source="keystore", path=store, password_file=password))
    assert key.address == ADDRESS
    password.write_text("wrong\n")
    with pytest.raises(KeyLoadError, match="could not be decrypted"):
        load_key(KeystoreKey(source="keystore", path=store, password_file=password))


def test_key_cannot_be_pickled() -> None:
    import pickle

    key = load_key(EnvKey(source="env", env="K"), {"K": SECRET})
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_fast_eip1559_signing_matches_eth_account() -> None:
    key = load_key(EnvKey(source="env", env="K"), {"K": SECRET})
    reference = Account.from_key(SECRET)
    for nonce, data in ((0, b""), (7, b"\x01" * 164), (2**20, bytes(range(200)))):
        tx = {"type": 2, "chainId": 31337, "nonce": nonce, "to": ADDRESS, "value": 5,
              "data": data, "gas": 400_000, "maxFeePerGas": 7 * 10**9,
              "maxPriorityFeePerGas": 2 * 10**9}
        expected = bytes(reference.sign_transaction(tx).raw_transaction)
        assert key.sign_eip1559(chain_id=31337, nonce=nonce, to=ADDRESS, value=5, data=data,
                                gas=400_000, max_fee=7 * 10**9, tip=2 * 10**9) == expected
