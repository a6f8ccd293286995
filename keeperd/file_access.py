"""Who besides keeperd can reach a file: its mode, or its POSIX ACL when it has one.

With an ACL the mode's group bits are the ACL's mask, not the group's access, so they cannot
be judged alone: systemd's credentials (`LoadCredential=`) are 0400 files with an entry that
lets the service's user read them (`user:<uid>:r--`), which the mode shows as 0440. What
counts is each entry's access as the kernel grants it (the entry's bits within the mask).
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path

ACL_XATTR = "system.posix_acl_access"
# Tags of the kernel's ACL xattr (linux/posix_acl_xattr.h).
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
READ, WRITE, EXECUTE = 4, 2, 1


@dataclass(frozen=True)
class AclEntry:
    tag: int
    perm: int
    id: int  # the uid or gid of a named entry; meaningless otherwise


def posix_acl(path: Path) -> list[AclEntry] | None:
    """The file's access ACL, or None when it has none beyond its mode (or the system has
    no ACLs)."""
    try:
        raw = os.getxattr(path, ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    except AttributeError:  # (no xattrs on this platform)
        return None
    if len(raw) < 4 or struct.unpack_from("<I", raw)[0] != 2:
        raise OSError(errno.EINVAL, f"unreadable ACL on {path}")
    return [AclEntry(*struct.unpack_from("<HHI", raw, offset))
            for offset in range(4, len(raw) - 7, 8)]


def _perm(bits: int) -> str:
    return "".join(c if bits & b else "-" for c, b in (("r", READ), ("w", WRITE),
                                                       ("x", EXECUTE)))


def others_access(path: Path, mode: int, uid: int) -> list[str]:
    """Who other than the file's owner and `uid` (the user keeperd runs as) may read or
    write the file, each as `chmod`/`setfacl` would name it; empty when nobody."""
    acl = posix_acl(path)
    if acl is None:
        group, other = (mode >> 3) & 7, mode & 7
        return ([f"group:{_perm(group)}"] if group else []) + (
            [f"other:{_perm(other)}"] if other else [])
    mask = next((e.perm for e in acl if e.tag == MASK), 7)
    found = []
    for e in acl:
        if e.tag == OTHER and e.perm:
            found.append(f"other:{_perm(e.perm)}")
        elif e.tag == GROUP_OBJ and e.perm & mask:
            found.append(f"group::{_perm(e.perm & mask)}")
        elif e.tag == GROUP and e.perm & mask:
            found.append(f"group:{e.id}:{_perm(e.perm & mask)}")
        elif e.tag == USER and e.perm & mask and e.id != uid:
            found.append(f"user:{e.id}:{_perm(e.perm & mask)}")
    return found

