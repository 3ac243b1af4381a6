"""Model-based test: random sequences of namespace and data operations run on
the mount and on a local directory, which must stay equal.

Each step does one operation on both sides and checks that both succeed or
both fail with the same errno, then compares the two trees: names, kinds,
sizes, permission bits, file contents and symlink targets. At the end of
each sequence the bucket is mounted again and must still show the same tree.
Hypothesis picks the operations from a fixed seed (derandomize), so a CI run
is repeatable and bounded (about 400 steps, under a minute). A failure
reports every step of its sequence; it is not shrunk, which would take many
minutes of mounting.

Knobs for hunting bugs by hand (not for CI): MODEL_EXPLORE=1 (random seeds),
MODEL_EXAMPLES=N (sequences), MODEL_TTL=SECONDS (the mount's cache TTLs),
MODEL_SHRINK=1 (shrink a failure), MODEL_STATS=1 (print each step's outcome,
with -s).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.support.mount import ZosfsMount

NAMES: tuple[str, ...] = ("a", "b", "c")
# Paths of one to three levels, each depth as likely as the others, so that
# most operations find their parent directory.
paths = st.integers(1, 3).flatmap(
    lambda depth: st.lists(st.sampled_from(NAMES), min_size=depth, max_size=depth)
).map("/".join)
modes = st.sampled_from([0o600, 0o644, 0o640, 0o700, 0o755, 0o444])
data = st.binary(min_size=0, max_size=300)


def outcome(fn: Callable[[], Any]) -> str:
    """'ok' or the errno's name."""
    try:
        fn()
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
    return "ok"


def snapshot(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """path -> (kind, size, permission bits, content or link target) for everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st_ = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", 0, stat.S_IMODE(st_.st_mode), b"")
            elif stat.S_ISLNK(st_.st_mode):
                out[rel] = ("symlink", st_.st_size, 0o777, os.fsencode(os.readlink(p)))
            else:
                out[rel] = ("file", st_.st_size, stat.S_IMODE(st_.st_mode), p.read_bytes())
    return out


def writing(path: str, flags: int, body: bytes, offset: int | None = None) -> Callable[[Path], None]:
    """An operation on a tree: open `path` write-only with `flags`, write
    `body` (at `offset`, or where the open left the file position), close."""

    def op(root: Path) -> None:
        fd = os.open(root / path, os.O_WRONLY | flags, 0o644)
        try:
            if offset is None:
                os.write(fd, body)
            else:
                os.pwrite(fd, body, offset)
        finally:
            os.close(fd)

    return op


def clear(root: Path) -> None:
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class FsMachine(RuleBasedStateMachine):
    zosfs: ZosfsMount
    mount: Path
    ref: Path

    def __init__(self) -> None:
        super().__init__()
        clear(self.mount)
        clear(self.ref)
        self.steps: list[str] = []

    def both(self, what: str, fn: Callable[[Path], Any]) -> None:
        """Do one operation on both sides; they must agree on its outcome."""
        self.steps.append(what)
        expected = outcome(lambda: fn(self.ref))
        got = outcome(lambda: fn(self.mount))
        assert got == expected, f"after {self.steps[:-1]}: {what}: mount says {got}, local disk says {expected}"
        if os.environ.get("MODEL_STATS"):
            print("STEP", what.split()[0], got)

    # -- choosing paths: mostly ones that exist (or could), sometimes any --------

    def existing(self, want: str | None = None) -> list[str]:
        """Paths below the reference root: files ('file'), dirs ('dir') or both."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.ref):
            rel = Path(dirpath).relative_to(self.ref)
            if want in (None, "dir"):
                out += [str(rel / d) for d in dirnames]
            if want in (None, "file"):
                out += [str(rel / f) for f in filenames]
        return sorted(out)

    def pick(self, draw: st.DataObject, want: str | None) -> str:
        """An existing path of that kind (four times in five), else any path."""
        candidates = self.existing(want)
        if candidates and draw.draw(st.integers(0, 4), label="any path?") < 4:
            return draw.draw(st.sampled_from(candidates), label="path")
        return draw.draw(paths, label="path")

    def pick_new(self, draw: st.DataObject) -> str:
        """A free name in an existing directory (four times in five), else
        any name in one (it may exist already)."""
        taken = set(self.existing())
        every = [f"{d}/{n}" if d else n for d in ["", *self.existing("dir")] for n in NAMES + ("d", "e")]
        free = [p for p in every if p not in taken]
        if free and draw.draw(st.integers(0, 4), label="any name?") < 4:
            return draw.draw(st.sampled_from(free), label="new path")
        return draw.draw(st.sampled_from(every), label="path")

    # -- operations -------------------------------------------------------------
    # One rule picks the operation, so that each is about equally frequent.

    @rule(op=st.sampled_from(["create", "write", "append", "truncate", "mkdir", "rename", "unlink", "rmdir", "chmod",
                              "symlink"]),
          draw=st.data())
    def step(self, op: str, draw: st.DataObject) -> None:
        getattr(self, f"do_{op}")(draw)

    def do_create(self, draw: st.DataObject) -> None:
        path = self.pick_new(draw)
        body = draw.draw(data, label="body")

        self.both(f"create {path} ({len(body)} bytes)", writing(path, os.O_CREAT | os.O_TRUNC, body))

    def do_write(self, draw: st.DataObject) -> None:
        path = self.pick(draw, "file")
        offset = draw.draw(st.integers(0, 500), label="offset")
        body = draw.draw(data.filter(bool), label="body")

        self.both(f"write {path} at {offset} ({len(body)} bytes)", writing(path, 0, body, offset))

    def do_append(self, draw: st.DataObject) -> None:
        path = self.pick(draw, "file")
        body = draw.draw(data.filter(bool), label="body")

        self.both(f"append {path} ({len(body)} bytes)", writing(path, os.O_APPEND, body))

    def do_truncate(self, draw: st.DataObject) -> None:
        path = self.pick(draw, "file")
        size = draw.draw(st.integers(0, 600), label="size")
        self.both(f"truncate {path} {size}", lambda root: os.truncate(root / path, size))

    def do_mkdir(self, draw: st.DataObject) -> None:
        path = self.pick_new(draw)
        self.both(f"mkdir {path}", lambda root: os.mkdir(root / path, 0o755))

    def do_rename(self, draw: st.DataObject) -> None:
        src = self.pick(draw, None)
        dst = self.pick_new(draw) if draw.draw(st.booleans(), label="to a new name?") else self.pick(draw, None)
        self.both(f"rename {src} {dst}", lambda root: os.rename(root / src, root / dst))

    def do_unlink(self, draw: st.DataObject) -> None:
        path = self.pick(draw, "file")
        self.both(f"unlink {path}", lambda root: os.unlink(root / path))

    def do_rmdir(self, draw: st.DataObject) -> None:
        path = self.pick(draw, "dir")
        self.both(f"rmdir {path}", lambda root: os.rmdir(root / path))

    def do_symlink(self, draw: st.DataObject) -> None:
        path = self.pick_new(draw)
        target = draw.draw(st.sampled_from(["a", "b/c", "../a", "/nowhere", "."]), label="target")
        self.both(f"symlink {path} -> {target}", lambda root: os.symlink(target, root / path))

    def do_chmod(self, draw: st.DataObject) -> None:
        path = self.pick(draw, None)
        mode = draw.draw(modes, label="mode")
        self.both(f"chmod {path} {mode:o}", lambda root: os.chmod(root / path, mode))

    @invariant()
    def trees_are_equal(self) -> None:
        expected = snapshot(self.ref)
        try:
            got = snapshot(self.mount)
        except OSError as err:
            raise AssertionError(f"after {self.steps}: walking the mount failed: {err!r}") from err
        if got != expected:
            diff = {p: (got.get(p), expected.get(p)) for p in set(got) | set(expected) if got.get(p) != expected.get(p)}
            raise AssertionError(f"after {self.steps}: mount != local disk: {diff}")

    def teardown(self) -> None:
        """Everything is in the bucket: a new mount shows the same tree."""
        assert self.zosfs.unmount() == 0
        self.zosfs.start()
        self.steps.append("remount")
        self.trees_are_equal()


def test_mount_behaves_like_a_local_directory(make_mount, bucket: str, tmp_path: Path) -> None:
    # Short TTLs, so that sequences also run through revalidation (HEADs and
    # new listings), not only through this mount's own cached state.
    ttl = os.environ.get("MODEL_TTL", "0.5")
    mnt = make_mount(bucket, options={"attr_timeout": ttl, "entry_timeout": ttl, "negative_timeout": ttl,
                                      "dir_cache_ttl": ttl})
    ref = tmp_path / "reference"
    ref.mkdir()
    machine = type("Machine", (FsMachine,), {"zosfs": mnt, "mount": mnt.path, "ref": ref})
    old_umask = os.umask(0o022)  # both sides create with the same mode
    try:
        run_state_machine_as_test(machine, settings=settings(
            max_examples=int(os.environ.get("MODEL_EXAMPLES", 10)), stateful_step_count=40, deadline=None,
            derandomize=not os.environ.get("MODEL_EXPLORE"), database=None,
            suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
            phases=list(Phase) if os.environ.get("MODEL_SHRINK") else [Phase.explicit, Phase.reuse, Phase.generate],
        ))
    finally:
        os.umask(old_umask)
