"""Operations and observations for the differential POSIX test
(tests/fs/test_posix_diff.py): random namespace and metadata operations on a
small tree, run as root or as another user, and what a user can observe of
a tree afterwards (types, modes, owners, sizes, link counts, user xattrs, and
how each time moved)."""

from __future__ import annotations

import errno
import os
import random
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OTHER_UID = OTHER_GID = 65534  # nobody / nogroup
THIRD_ID = 1000
NAMES = ("a", "b", "c")
MODES = (0o600, 0o644, 0o640, 0o700, 0o755, 0o777, 0o444, 0o000, 0o4755, 0o2775, 0o1777)
LINK_TARGETS = ("a", "b", "a/b", "nowhere", ".")  # relative and inside the tree only
STAMPS = {1_000_000_000_123_456_789: "T2001", 2_200_000_000_987_654_321: "T2039"}
XATTR_FLAGS = {0: "0", os.XATTR_CREATE: "CREATE", os.XATTR_REPLACE: "REPLACE"}


# --- operations ---------------------------------------------------------------


@dataclass
class Op:
    """One operation: `kind` with its arguments, run by root or the other user."""

    kind: str
    paths: tuple[str, ...]
    as_other: bool = False
    args: dict[str, Any] = field(default_factory=dict)
    targets: frozenset[str] = frozenset()  # the op's paths, also as resolved on the local side
    parents: frozenset[str] = frozenset()  # their parent directories
    setgid_parents: frozenset[str] = frozenset()  # those with S_ISGID on the local side, before the op

    def __str__(self) -> str:
        who = f"uid {OTHER_UID}" if self.as_other else "root"
        extra = " ".join(f"{k}={oct(v) if k == 'mode' else v}" for k, v in self.args.items())
        return f"{who}: {self.kind} {' '.join(self.paths)} {extra}".rstrip()

    def apply(self, root: str) -> None:
        """Run on the tree at `root` (raises OSError as the system call did)."""
        p = [os.path.join(root, x) for x in self.paths]
        a = self.args
        if self.kind == "open":
            fd = os.open(p[0], a["flags"], a["mode"])
            os.close(fd)
        elif self.kind == "write":
            fd = os.open(p[0], os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, b"x" * a["bytes"])
            finally:
                os.close(fd)
        elif self.kind == "mkdir":
            os.mkdir(p[0], a["mode"])
        elif self.kind == "mkfifo":
            os.mkfifo(p[0], a["mode"])
        elif self.kind == "symlink":
            os.symlink(a["target"], p[0])
        elif self.kind == "link":
            os.link(p[0], p[1], follow_symlinks=False)
        elif self.kind == "rename":
            os.rename(p[0], p[1])
        elif self.kind == "unlink":
            os.unlink(p[0])
        elif self.kind == "rmdir":
            os.rmdir(p[0])
        elif self.kind == "chmod":
            os.chmod(p[0], a["mode"])
        elif self.kind == "chown":
            os.chown(p[0], a["uid"], a["gid"], follow_symlinks=a["follow"])
        elif self.kind == "utime":
            times = None if a["ns"] == "now" else a["ns"]
            if times is None:
                os.utime(p[0], follow_symlinks=a["follow"])
            else:
                os.utime(p[0], ns=times, follow_symlinks=a["follow"])
        elif self.kind == "truncate":
            os.truncate(p[0], a["size"])
        elif self.kind == "setxattr":
            flags = {v: k for k, v in XATTR_FLAGS.items()}[a["flags"]]
            os.setxattr(p[0], a["name"], a["value"].encode(), flags, follow_symlinks=a["follow"])
        elif self.kind == "removexattr":
            os.removexattr(p[0], a["name"], follow_symlinks=a["follow"])
        else:
            raise AssertionError(self.kind)


OPEN_FLAGS = [acc | extra for acc in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)
              for extra in (0, os.O_CREAT, os.O_CREAT | os.O_EXCL, os.O_TRUNC, os.O_CREAT | os.O_TRUNC,
                            os.O_CREAT | os.O_EXCL | os.O_TRUNC, os.O_CREAT | os.O_NOFOLLOW)]


def flag_names(flags: int) -> str:
    """O_WRONLY|O_CREAT-style text of open flags (readable in a reproducer)."""
    acc = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}[flags & os.O_ACCMODE]
    extra = [n for n in ("O_CREAT", "O_EXCL", "O_TRUNC", "O_NOFOLLOW") if flags & getattr(os, n)]
    return "|".join([acc, *extra])


class Generator:
    """Draws operations from a seeded random source, mostly on names that
    exist in the reference tree (so that most succeed), sometimes on any."""

    def __init__(self, seed: int, ref: Path) -> None:
        self.rnd = random.Random(seed)
        self.ref = ref

    def existing(self, want: str | None = None) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.ref):
            rel = Path(dirpath).relative_to(self.ref)
            for name in dirnames + filenames:
                path = str(rel / name)
                mode = os.lstat(self.ref / path).st_mode
                kind = kind_of(mode)
                if want is None or kind == want:
                    out.append(path)
        return sorted(out)

    def any_path(self) -> str:
        depth = self.rnd.choice((1, 1, 2, 2, 3))
        return "/".join(self.rnd.choice(NAMES) for _ in range(depth))

    def pick(self, *kinds: str) -> str:
        """An existing path of one of `kinds` (four times in five), else any path."""
        candidates = [p for k in kinds for p in self.existing(k)] if kinds else self.existing()
        if candidates and self.rnd.random() < 0.8:
            return self.rnd.choice(sorted(candidates))
        return self.any_path()

    def pick_new(self) -> str:
        """A free name in an existing directory (four times in five), else any name in one."""
        taken = set(self.existing())
        every = [f"{d}/{n}" if d else n for d in ["", *self.existing("dir")] for n in NAMES]
        free = [p for p in every if p not in taken]
        if free and self.rnd.random() < 0.8:
            return self.rnd.choice(free)
        return self.rnd.choice(every)

    def next(self) -> Op:
        r = self.rnd
        kind = r.choice(("open", "open", "write", "mkdir", "mkdir", "mkfifo", "symlink", "link", "rename",
                         "rename", "unlink", "rmdir", "chmod", "chown", "utime", "truncate", "setxattr",
                         "removexattr"))
        as_other = r.random() < 0.3
        target = lambda: self.pick() if r.random() < 0.8 else self.pick("dir", "file")  # noqa: E731
        if kind == "open":
            flags = r.choice(OPEN_FLAGS)
            path = self.pick_new() if flags & os.O_CREAT and r.random() < 0.5 else self.pick()
            return Op(kind, (path,), as_other, {"flags": flag_names(flags), "mode": r.choice(MODES)})
        if kind == "write":
            return Op(kind, (self.pick("file"),), as_other, {"bytes": r.randint(1, 300)})
        if kind in ("mkdir", "mkfifo"):
            return Op(kind, (self.pick_new(),), as_other, {"mode": r.choice(MODES)})
        if kind == "symlink":
            return Op(kind, (self.pick_new(),), as_other, {"target": r.choice(LINK_TARGETS)})
        if kind in ("link", "rename"):
            src = self.pick()
            dst = self.pick_new() if r.random() < 0.6 else self.pick()
            return Op(kind, (src, dst), as_other)
        if kind == "unlink":
            return Op(kind, (self.pick("file", "symlink"),), as_other)
        if kind == "rmdir":
            return Op(kind, (self.pick("dir"),), as_other)
        if kind == "chmod":
            return Op(kind, (target(),), as_other, {"mode": r.choice(MODES)})
        if kind == "chown":
            ids = r.choice(((OTHER_UID, OTHER_GID), (-1, OTHER_GID), (THIRD_ID, -1), (0, 0), (-1, 0), (-1, -1)))
            return Op(kind, (self.pick(),), as_other, {"uid": ids[0], "gid": ids[1], "follow": r.random() < 0.5})
        if kind == "utime":
            ns = r.choice(["now", *((t, t) for t in STAMPS), tuple(STAMPS)])
            return Op(kind, (self.pick(),), as_other, {"ns": ns, "follow": r.random() < 0.7})
        if kind == "truncate":
            return Op(kind, (target(),), as_other, {"size": r.choice((0, 0, 1, 100, 5000))})
        name = r.choice(("user.k", "user.v"))
        if kind == "setxattr":
            return Op(kind, (self.pick(),), as_other, {"name": name, "value": r.choice(("1", "two", "")),
                                                       "flags": r.choice(list(XATTR_FLAGS.values())),
                                                       "follow": r.random() < 0.7})
        return Op(kind, (self.pick(),), as_other, {"name": name, "follow": r.random() < 0.7})


def scripted() -> list[Op]:
    """Operations every sequence starts with, so that cases a random draw
    rarely builds are always compared: a sticky world-writable directory
    shared by root and the other user, S_ISUID/S_ISGID cleared by chown and
    by another user's write, chgrp by the owner, and a non-owner's chmod,
    chown, utimensat, unlink and rename there."""
    o, r = True, False
    return [
        Op("mkdir", ("s",), r, {"mode": 0o777}),
        Op("chmod", ("s",), r, {"mode": 0o1777}),
        Op("open", ("s/o",), o, {"flags": "O_WRONLY|O_CREAT", "mode": 0o644}),
        Op("open", ("s/r",), r, {"flags": "O_WRONLY|O_CREAT", "mode": 0o755}),
        Op("chmod", ("s/r",), r, {"mode": 0o6755}),
        Op("chown", ("s/r",), r, {"uid": THIRD_ID, "gid": -1, "follow": True}),
        Op("chown", ("s/o",), r, {"uid": -1, "gid": 0, "follow": True}),
        Op("chown", ("s/o",), o, {"uid": -1, "gid": OTHER_GID, "follow": True}),
        Op("chown", ("s/o",), o, {"uid": 0, "gid": -1, "follow": True}),
        Op("chmod", ("s/r",), o, {"mode": 0o777}),
        Op("utime", ("s/r",), o, {"ns": (min(STAMPS), min(STAMPS)), "follow": True}),
        Op("utime", ("s/r",), o, {"ns": "now", "follow": True}),
        Op("unlink", ("s/r",), o),
        Op("rename", ("s/r", "s/x"), o),
        Op("chmod", ("s/r",), r, {"mode": 0o6777}),
        Op("write", ("s/r",), o, {"bytes": 10}),
        Op("unlink", ("s/o",), o),
    ]


def run_op(op: Op, root: str, root_fd: int) -> str:
    """Run `op` on one tree; 'ok' or the errno's name. The other user's
    operations run in a forked child that enters the tree by its open
    descriptor (the path to it is root's only) and drops its ids."""
    if not op.as_other:
        try:
            op_for(op).apply(root)
        except OSError as err:
            return errno.errorcode.get(err.errno, str(err.errno))
        return "ok"
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 255
        try:
            os.fchdir(root_fd)
            os.setgroups([])
            os.setresgid(OTHER_GID, OTHER_GID, OTHER_GID)
            os.setresuid(OTHER_UID, OTHER_UID, OTHER_UID)
            op_for(op).apply(".")
            code = 0
        except OSError as err:
            code = err.errno if 0 < err.errno < 255 else 254
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "TIMEOUT"
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(status)
    return "ok" if code == 0 else errno.errorcode.get(code, f"exit {code}")


def op_for(op: Op) -> Op:
    """The op with flag names turned back into numbers for the system call."""
    if op.kind != "open":
        return op
    flags = 0
    for name in op.args["flags"].split("|"):
        flags |= getattr(os, name)
    return Op(op.kind, op.paths, op.as_other, {**op.args, "flags": flags})


# --- observing a tree -----------------------------------------------------------


def kind_of(mode: int) -> str:
    """file, dir, symlink, fifo (or the octal type) of a st_mode."""
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "fifo")):
        if test(mode):
            return name
    return oct(stat.S_IFMT(mode))


def snapshot(root: Path) -> dict[str, dict[str, Any]]:
    """path -> what a user can observe of it (raw times, compared later)."""
    out: dict[str, dict[str, Any]] = {}

    def walk(rel: str) -> None:
        # O_NOATIME: looking must not move the local directory's atime
        # (relatime); the mount is noatime anyway.
        fd = os.open(root / rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME)
        try:
            with os.scandir(fd) as it:
                entries = sorted(it, key=lambda e: e.name)
        finally:
            os.close(fd)
        for e in entries:
            path = f"{rel}/{e.name}" if rel else e.name
            full = root / path
            st = os.lstat(full)
            dtype = "dir" if e.is_dir(follow_symlinks=False) else "symlink" if e.is_symlink() else \
                "file" if e.is_file(follow_symlinks=False) else "other"
            kind = kind_of(st.st_mode)
            try:
                names = sorted(n for n in os.listxattr(full, follow_symlinks=False) if n.startswith("user."))
                xattrs = {n: os.getxattr(full, n, follow_symlinks=False) for n in names}
            except OSError as err:
                xattrs = {"error": errno.errorcode.get(err.errno)}
            out[path] = {"type": kind, "d_type": dtype, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid,
                         "gid": st.st_gid, "size": st.st_size, "nlink": st.st_nlink, "xattrs": xattrs,
                         "atime": st.st_atime_ns, "mtime": st.st_mtime_ns, "ctime": st.st_ctime_ns}
            if kind == "dir":
                walk(path)

    walk("")
    return out


def relation(after: int, before: int | None, window: tuple[int, int]) -> str:
    """How a time moved in one operation: '=' (it did not), the name of the
    fixed stamp it was set to, 'now' (to the time of the operation), else
    '<' or '>' than before (or 'old'/'future' for a new entry's)."""
    if after == before:
        return "="
    if after in STAMPS:
        return STAMPS[after]
    if window[0] <= after <= window[1]:
        return "now"
    if before is None:
        return "old" if after < window[0] else "future"
    return ">" if after > before else "<"


def sign(x: int, y: int) -> str:
    """=, > or < of x against y."""
    return "=" if x == y else ">" if x > y else "<"


def previous(op: Op, result: str, before: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each path's state before the op; after a rename, the destination's
    (and everything below it) is what the source was."""
    if op.kind != "rename" or result != "ok" or op.paths[0] == op.paths[1]:
        return before
    src, dst = op.paths
    moved = {dst + p[len(src):]: e for p, e in before.items() if p == src or p.startswith(src + "/")}
    return {p: e for p, e in before.items() if p != dst and not p.startswith(dst + "/")} | moved


def observe(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
            window: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """Turn raw times into orderings: relative to the same entry before the
    operation, and, for a new entry, within it (mtime vs ctime, atime vs
    mtime); times that stayed as they were are '=' however they compare."""
    out = {}
    for path, e in after.items():
        prev = before.get(path)
        if prev is not None and prev["type"] != e["type"]:
            prev = None
        o = {k: v for k, v in e.items() if k not in ("atime", "mtime", "ctime")}
        for t in ("atime", "mtime", "ctime"):
            o[t] = relation(e[t], prev[t] if prev else None, window)
        if prev is None:
            o["mtime?ctime"] = sign(e["mtime"], e["ctime"])
            o["atime?mtime"] = sign(e["atime"], e["mtime"])
        out[path] = o
    return out


def clear(root: Path) -> None:
    """Remove everything below root (as root: modes do not stop it)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                os.unlink(p)
            else:
                os.rmdir(p)


def persistent(snap: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What a remount must keep: type, mode, owner, group, size of non-directories, xattrs."""
    return {p: (e["type"], e["mode"], e["uid"], e["gid"], e["size"] if e["type"] != "dir" else 0, e["xattrs"])
            for p, e in snap.items()}


def fs_type(path: Path) -> str:
    """The filesystem type that holds `path` (the longest mount point above it)."""
    best, found = "", "?"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            if (str(path) + "/").startswith(point.rstrip("/") + "/") and len(point) >= len(best):
                best, found = point, fields[fields.index("-") + 1]
    return found


def resolve(op: Op, ref: Path) -> None:
    """Note the op's paths and their parents, as written and with symlinks
    resolved on the local side (chmod through a symlink changes its target)."""
    targets = set()
    for p in op.paths:
        targets.add(p)
        real = os.path.realpath(ref / p)
        if real.startswith(str(ref) + "/"):
            targets.add(os.path.relpath(real, ref))
    op.targets = frozenset(targets)
    op.parents = frozenset(os.path.dirname(p) for p in targets if os.path.dirname(p))
    setgid = set()
    for parent in op.parents:
        try:
            if os.lstat(ref / parent).st_mode & stat.S_ISGID:
                setgid.add(parent)
        except OSError:
            pass
    op.setgid_parents = frozenset(setgid)
