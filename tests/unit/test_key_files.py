"""Key files as operators deliver them: systemd credentials (0400 plus an ACL entry for the
service's user), Docker's non-root user (uid 10001) facing a root-owned key. The checks run
as `keeperd check-config --offline` does, in a process of the user keeperd would run as."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from keeperd.checks import local_issues
from keeperd.config import FileKey, parse_config
from keeperd.file_access import GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, posix_acl
from keeperd.keys import KeyLoadError, SecretError, check_secret_file, load_key

SECRET = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
SERVICE_UID = 10001  # the Docker image's user; a DynamicUser's uid alike
NOT_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")
UNDEFINED = 0xFFFFFFFF


def set_acl(path: Path, entries: list[tuple[int, int, int]]) -> None:
    """`setfacl --set` with (tag, perm, id) entries: setfacl when installed, else the
    kernel's xattr, which is what setfacl writes."""
    if shutil.which("setfacl"):
        names = {USER_OBJ: "u:", USER: "u:{}", GROUP_OBJ: "g:", GROUP: "g:{}", MASK: "m:",
                 OTHER: "o:"}
        spec = ",".join(names[t].format(i) + ":" + "".join(
            c if p & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))
            for t, p, i in entries)
        subprocess.run(["setfacl", "--set", spec, str(path)], check=True)
        return
    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e)
                                          for e in sorted(entries))  # (the kernel's order)
    os.setxattr(path, "system.posix_acl_access", raw)


def credential_acl(*extra: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """What systemd's LoadCredential= leaves: owner r, the service's user r, nobody else."""
    return [(USER_OBJ, 4, UNDEFINED), (USER, 4, SERVICE_UID), *extra,
            (GROUP_OBJ, 0, UNDEFINED), (MASK, 4, UNDEFINED), (OTHER, 0, UNDEFINED)]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="keeperd-keys-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def key_file(directory: Path, mode: int = 0o400) -> Path:
    path = directory / "keeper-key"
    path.write_text(SECRET + "\n")
    os.chmod(path, mode)
    return path


def check_config_as(uid: int, directory: Path, key: Path, password: Path | None = None) -> str:
    """What `keeperd check-config --offline` finds on this machine (`checks.local_issues`),
    run as `uid` — in a forked child (the interpreter under /root is not other users' to
    exec) that drops to that user, as the service's process is. "" when nothing."""
    config = parse_config({
        "state_dir": str(directory / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": ["http://127.0.0.1:1"]}],
        "keeper": {"mode": "liquidate", "key": {"source": "file", "path": str(key)} if
                   password is None else {"source": "keystore", "path": str(key),
                                          "password_file": str(password)}}}, env={})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            try:
                found = "\n".join(str(i) for i in local_issues(config))
            except BaseException:
                found = "Traceback:\n" + traceback.format_exc()
            os.write(write, found.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        found = answer.read()
    os.waitpid(pid, 0)
    return found


@NOT_ROOT
def test_a_systemd_credential_is_accepted_by_the_service_user(shared_dir: Path) -> None:
    """0400, root's, with `user:10001:r--`: the mode reads 0440 (the mask), which the old
    check refused as group-readable."""
    key = key_file(shared_dir)
    set_acl(key, credential_acl())
    assert oct(key.stat().st_mode & 0o777) == "0o440"
    assert check_config_as(SERVICE_UID, shared_dir, key) == ""


@NOT_ROOT
def test_an_acl_letting_anyone_else_read_is_refused_by_name(shared_dir: Path) -> None:
    key = key_file(shared_dir)
    set_acl(key, credential_acl((USER, 4, 10002)))
    found = check_config_as(SERVICE_UID, shared_dir, key)
    assert found.startswith("keeper.key.path: ") and "user:10002:r--" in found, found


def test_acl_entries_are_judged_within_the_mask(tmp_path: Path) -> None:
    key = key_file(tmp_path)
    set_acl(key, credential_acl((GROUP, 4, 10003)))
    assert posix_acl(key) is not None
    with pytest.raises(SecretError, match=r"group:10003:r--"):
        check_secret_file(key, "keeper.key.path", uid=SERVICE_UID)
    # The group's entry grants nothing once the mask takes read away.
    set_acl(key, [(USER_OBJ, 4, UNDEFINED), (USER, 4, SERVICE_UID), (GROUP, 4, 10003),
                  (GROUP_OBJ, 0, UNDEFINED), (MASK, 0, UNDEFINED), (OTHER, 0, UNDEFINED)])
    check_secret_file(key, "keeper.key.path", uid=SERVICE_UID)
    set_acl(key, [*credential_acl()[:-1], (OTHER, 4, UNDEFINED)])
    with pytest.raises(SecretError, match=r"other:r--"):
        check_secret_file(key, "keeper.key.path", uid=SERVICE_UID)
    # The service's user's entry is another user to a keeperd running as someone else.
    set_acl(key, credential_acl())
    with pytest.raises(SecretError, match=r"user:10001:r--"):
        check_secret_file(key, "keeper.key.path", uid=SERVICE_UID + 1)


@NOT_ROOT
def test_a_root_owned_key_unreadable_by_the_docker_user_is_one_clear_line(
        shared_dir: Path) -> None:
    key = key_file(shared_dir, 0o600)  # (root's, as `docker run -v /etc/keeperd/key:...`)
    found = check_config_as(SERVICE_UID, shared_dir, key)
    assert found.startswith("keeper.key.path: "), found  # (not "Traceback")
    assert "uid 10001" in found and "chown 10001" in found
    assert SECRET[2:] not in found
    # A keystore alike (its password file the user's own): the old code's traceback.
    store = shared_dir / "keystore.json"
    store.write_text(json.dumps(Account.encrypt(SECRET, "hunter2", iterations=2)))
    os.chmod(store, 0o600)
    password = shared_dir / "password"
    password.write_text("hunter2\n")
    os.chmod(password, 0o600)
    os.chown(password, SERVICE_UID, -1)
    found = check_config_as(SERVICE_UID, shared_dir, store, password)
    assert found.startswith("keeper.key.path: "), found
    assert "cannot read keystore" in found and "chown 10001" in found


@NOT_ROOT
def test_a_key_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    key = key_file(tmp_path, 0o600)
    os.chown(key, 10002, -1)
    with pytest.raises(KeyLoadError, match=r"belongs to uid 10002.*keeperd runs as uid 0"):
        load_key(FileKey(source="file", path=key))
    os.chown(key, 0, -1)
    assert load_key(FileKey(source="file", path=key)).address == ADDRESS


def test_a_directory_or_unreadable_keystore_is_an_error_not_a_traceback(
        tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="not a regular file"):
        load_key(FileKey(source="file", path=tmp_path))


@pytest.mark.parametrize("digits", [63, 62, 65, 1])
def test_a_key_not_of_64_hex_digits_is_refused_not_padded_into_another(digits: int) -> None:
    """eth_account pads an odd-length text: a key missing its last digit loaded as another
    key, whose address nobody funded (a by-hand trial), with no error."""
    from keeperd.config import EnvKey

    text = (SECRET[2:] + "7")[:digits]
    for value in (text, "0x" + text):
        with pytest.raises(KeyLoadError, match="64 hex digits"):
            load_key(EnvKey(source="env", env="K"), {"K": value})
    assert load_key(EnvKey(source="env", env="K"), {"K": SECRET}).address == ADDRESS
    assert load_key(EnvKey(source="env", env="K"), {"K": SECRET[2:]}).address == ADDRESS
    assert load_key(EnvKey(source="env", env="K"), {"K": " 0X" + SECRET[2:] + "\n"}).address \
        == ADDRESS
