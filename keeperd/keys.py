"""The keeper's private key: loaded from the environment, a file or an encrypted keystore, and
never shown — not in a log line, an error, a metric, a traceback or a `repr`. (A key kept in
a signer service instead: execution/signer.py.)

A key file that anyone but keeperd's user can read — by its mode or its ACL — is refused
with the reason: a key that has been readable by others must be treated as leaked. Every
other file holding a secret (an alert sink's token, the keystore's password, the database's)
is held to the same rule by
`check_secret_file`, which `keeperd check-config` runs on each of them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import coincurve
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from keeperd.chain import rlp
from keeperd.config import EnvKey, FileKey, KeySource, KeystoreKey
from keeperd.execution.signer import UnsignedTx
from keeperd.file_access import others_access


class SecretError(Exception):
    """A secret cannot be used. The message says why and never contains the secret; `field`
    is the config field it comes from, `fix` what to do."""

    def __init__(self, message: str, *, field: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.field, self.fix = field, fix


class KeyLoadError(SecretError):
    """The key could not be loaded; the message says why and never contains the key."""


class KeeperKey:
    """Signs for the keeper. `address` is public; the key itself is never printable."""

    __slots__ = ("_account", "_signer")

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self._signer = coincurve.PrivateKey(bytes(account.key))

    @property
    def address(self) -> str:
        return str(self._account.address)

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        signed = self._account.sign_transaction(tx)
        return bytes(signed.raw_transaction)

    def sign_eip1559(self, *, chain_id: int, nonce: int, to: str, value: int, data: bytes,
                     gas: int, max_fee: int, tip: int) -> bytes:
        """A signed type-2 transaction, byte-identical to eth_account's and many times
        faster: RLP (keeperd's own encoder) and one secp256k1 signature, no dict validation
        (tests/unit/test_rlp.py checks the bytes). The hot path signs up to hundreds of
        liquidations per block."""
        fields: list[rlp.Item] = [chain_id, nonce, tip, max_fee, gas, bytes.fromhex(to[2:]),
                                  value, data, []]
        digest = keccak(b"\x02" + rlp.encode(fields))
        sig = self._signer.sign_recoverable(digest, hasher=None)
        r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
        return b"\x02" + rlp.encode([*fields, v, r, s])

    def sign_authorization(self, *, chain_id: int, address: str, nonce: int) -> Any:
        """An EIP-7702 authorization: the address's code becomes a delegation to `address`
        (the zero address: none). Only `keeperd wave` asks for one (execution/wave_setup.py),
        at an operator's command."""
        return self._account.sign_authorization(
            {"chainId": chain_id, "address": address, "nonce": nonce})

    async def sign(self, tx: UnsignedTx) -> bytes:
        """The local `Signer` (execution/signer.py)."""
        return self.sign_eip1559(chain_id=tx.chain_id, nonce=tx.nonce, to=tx.to, value=tx.value,
                                 data=tx.data, gas=tx.gas, max_fee=tx.max_fee, tip=tx.tip)

    def secret_hex(self) -> str:
        """For the log redactor only (it must know what never to print)."""
        return "0x" + bytes(self._account.key).hex()

    def __repr__(self) -> str:
        return f"KeeperKey(address={self.address})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("KeeperKey cannot be pickled")


def _from_hex(text: str, where: str, field: str = "keeper.key") -> KeeperKey:
    value = text.strip()
    digits = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        # Exactly 64 digits: eth_account pads a shorter odd-length text, so a key missing a
        # digit (a paste cut short) loaded as another key, with an address nobody funded.
        if len(digits) != 64:
            raise ValueError("not 64 hex digits")
        account = Account.from_key(value)
    except Exception:
        # Deliberately not chained: the original exception's message may quote the value.
        raise KeyLoadError(f"{where} does not hold a valid hex private key "
                           "(64 hex digits, optionally 0x-prefixed)", field=field,
                           fix="put the keeper's private key there, and nothing else"
                           ) from None
    return KeeperKey(account)


def check_secret_file(path: Path, field: str, what: str = "secret file",
                      holds: str = "the secret", uid: int | None = None) -> None:
    """A file holding a secret: it exists, is owned by the user keeperd runs as (`uid`, by
    default this process's) or by root, that user can read it, it is not empty, and nobody
    else may read or write it — neither by its mode nor by its ACL (a systemd credential's
    `user:<uid>:r--` entry for keeperd's own user is fine). A secret others could read must
    be treated as leaked. Raises SecretError naming `field`; keeps nothing it reads."""
    uid = os.geteuid() if uid is None else uid
    try:
        st = path.stat()
        others = others_access(path, st.st_mode, uid)
    except FileNotFoundError:
        raise SecretError(f"{what} {path} does not exist", field=field,
                          fix=f"check {field}, or create the file (chmod 600)") from None
    except OSError as exc:
        raise SecretError(f"cannot inspect {what} {path} ({exc.strerror})", field=field,
                          fix="let keeperd's user reach the directory holding it") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"{what} {path} is not a regular file", field=field,
                          fix=f"point {field} at the file holding {holds}")
    if st.st_uid not in (uid, 0):
        raise SecretError(
            f"{what} {path} belongs to uid {st.st_uid}, and keeperd runs as uid {uid}: its "
            "owner can let others read it", field=field,
            fix=f"chown {uid} {path} (or root), chmod 600; in Docker keeperd is uid 10001")
    if others:
        raise SecretError(
            f"{what} {path} is readable or writable by its group or by others "
            f"({', '.join(others)}; mode {stat.filemode(st.st_mode)}); run `chmod 600 {path}`"
            f" (and `setfacl -b {path}` if it has an ACL) and, since others could read it, "
            f"consider {holds} leaked", field=field, fix=f"replace {holds}, then chmod 600")
    try:
        empty = not path.read_bytes().strip()
    except OSError as exc:
        owner = "root" if st.st_uid == 0 else f"uid {st.st_uid}"
        raise SecretError(
            f"keeperd (uid {uid}) cannot read {what} {path}, owned by {owner} with mode "
            f"{stat.filemode(st.st_mode)} ({exc.strerror})", field=field,
            fix=f"chown {uid} {path} && chmod 600 {path} (in Docker keeperd is uid 10001: "
            "chown 10001 on the host file); under systemd, pass it with LoadCredential= and "
            "point the config at ${CREDENTIALS_DIRECTORY}") from None
    if empty:
        raise SecretError(f"{what} {path} is empty", field=field,
                          fix="write the secret into it")


def _read_text(path: Path, field: str, what: str) -> str:
    """A file's text, or KeyLoadError (never an OSError's traceback)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise KeyLoadError(f"{what} {path} does not exist", field=field,
                           fix=f"check {field}") from None
    except OSError as exc:
        raise KeyLoadError(f"keeperd (uid {os.geteuid()}) cannot read {what} {path} "
                           f"({exc.strerror})", field=field,
                           fix=f"chown {os.geteuid()} {path} (in Docker keeperd is uid "
                           "10001)") from None


def _check_file_private(path: Path, field: str, what: str) -> None:
    try:
        check_secret_file(path, field, what, holds="the key")
    except SecretError as exc:
        raise KeyLoadError(str(exc), field=exc.field, fix=exc.fix) from None


def load_key(source: KeySource, environ: Mapping[str, str] | None = None) -> KeeperKey:
    """The key as `keeperd run` loads it (and `check-config` checks it). Raises KeyLoadError
    with the field and the fix."""
    env = os.environ if environ is None else environ
    if isinstance(source, EnvKey):
        value = env.get(source.env)
        if not value:
            raise KeyLoadError(f"environment variable {source.env} (keeper.key.env) is not set",
                               field="keeper.key.env",
                               fix=f"export {source.env} in keeperd's environment (systemd: "
                               "EnvironmentFile=, readable by root only)")
        return _from_hex(value, f"environment variable {source.env}", "keeper.key.env")
    if isinstance(source, FileKey):
        _check_file_private(source.path, "keeper.key.path", "key file")
        return _from_hex(_read_text(source.path, "keeper.key.path", "key file"),
                         f"key file {source.path}", "keeper.key.path")
    if isinstance(source, KeystoreKey):
        _check_file_private(source.password_file, "keeper.key.password_file", "password file")
        keystore = _read_text(source.path, "keeper.key.path", "keystore")
        password = _read_text(source.password_file, "keeper.key.password_file",
                              "password file").rstrip("\n")
        try:
            key = Account.decrypt(keystore, password)
        except Exception:
            raise KeyLoadError(f"keystore {source.path} could not be decrypted with the password "
                               f"in {source.password_file} (wrong password or not a keystore)",
                               field="keeper.key.path",
                               fix="check the keystore and its password file") from None
        return KeeperKey(Account.from_key(key))
    raise KeyLoadError(f"unknown key source {type(source).__name__}", field="keeper.key")
