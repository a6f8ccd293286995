"""Process hardening for a process that holds the keeper's key.

A core dump of keeperd holds the key in clear, wherever the kernel writes it (a file in the
working directory, systemd-coredump's store, apport's). `forbid_core_dumps` turns them off
from inside, so it holds however keeperd is started (the unit also sets LimitCORE=0); being
not dumpable also makes /proc/<pid>/{environ,mem,maps} root's only and stops another process
of the same user attaching to keeperd with ptrace (py-spy too, unless root).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def forbid_core_dumps() -> None:
    """No core file (RLIMIT_CORE 0) and not dumpable (prctl PR_SET_DUMPABLE 0). Raises
    OSError when the kernel refuses, which it never should: keeperd must not go on without."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not sys.platform.startswith("linux"):
        return  # (RLIMIT_CORE is all other systems have)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "prctl(PR_SET_DUMPABLE, 0) failed")


def dumpable() -> bool:
    """Whether this process may still dump core (Linux; elsewhere: whether RLIMIT_CORE
    allows a core file)."""
    if not sys.platform.startswith("linux"):
        return resource.getrlimit(resource.RLIMIT_CORE)[0] != 0
    return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def drop_from_environment(name: str) -> None:
    """Remove `name` from the environment — os.environ, what children would inherit — and
    blank its value where the kernel keeps the environment keeperd was started with (what
    /proc/<pid>/environ shows, read from the process's memory: unsetenv alone leaves it
    there). Only bytes inside that start-up block are touched, never memory Python or libc
    allocated."""
    entries: list[int] = []
    span = _startup_environment_span()
    if span is not None and sys.platform.startswith("linux"):
        prefix = name.encode() + b"="
        environ = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
        i = 0
        while environ[i] is not None:
            address = ctypes.cast(environ, ctypes.POINTER(ctypes.c_void_p))[i]
            if environ[i].startswith(prefix) and address is not None and \
                    span[0] <= address < span[1]:
                entries.append(address)
            i += 1
    os.environ.pop(name, None)
    for address in entries:
        value = ctypes.string_at(address)  # (its length: the bytes up to the NUL)
        ctypes.memset(address + len(name) + 1, 0, len(value) - len(name) - 1)


def _startup_environment_span() -> tuple[int, int] | None:
    """(env_start, env_end) from /proc/self/stat (Linux >= 3.5), or None."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # (the name in parentheses may hold spaces)
    # Fields 50 and 51 of proc(5); `fields` starts at field 3.
    if len(fields) < 49:
        return None
    return int(fields[47]), int(fields[48])
