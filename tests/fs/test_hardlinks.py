"""Hard links (issue 17, point 8) stay refused: an object has exactly one
key. link(2) answers EPERM, which Linux documents for "the filesystem does
not support the creation of hard links" (vfat answers the same); s3fs 1.97
answers ENOTSUP. cp -a, GNU tar and rsync -H were tried with EPERM, ENOTSUP,
EMLINK and EXDEV: each fails the linked file alike (no fallback to a copy
with any of them), so the errno is kept, and the ways around it work."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

from tests.support.mount import ZosfsMount


def linked_tree(root: Path) -> Path:
    src = root / "src"
    src.mkdir()
    (src / "a").write_bytes(b"shared\n")
    os.link(src / "a", src / "b")
    (src / "c").write_bytes(b"alone\n")
    return src


def run(cmd: list[str] | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=120)


def contents(d: Path) -> dict[str, bytes]:
    return {name: (d / name).read_bytes() for name in sorted(os.listdir(d))}


def test_link_is_refused_with_eperm(mnt: ZosfsMount) -> None:
    (mnt.path / "x").write_bytes(b"1")
    for target in ("y", "sub-missing/y"):
        try:
            os.link(mnt.path / "x", mnt.path / target)
        except OSError as err:
            code = err.errno
        else:
            code = 0
        assert code == (errno.EPERM if target == "y" else errno.ENOENT), target
    assert sorted(os.listdir(mnt.path)) == ["x"]
    try:
        os.link(mnt.path / "missing", mnt.path / "z")
    except OSError as err:
        assert err.errno == errno.ENOENT  # the kernel's lookup comes first, as on any filesystem


def test_copying_tools_on_linked_files(mnt: ZosfsMount, tmp_path: Path) -> None:
    src = linked_tree(tmp_path)
    everything = {"a": b"shared\n", "b": b"shared\n", "c": b"alone\n"}
    # Preserving links: each tool reports the refusal and exits non-zero,
    # and the second name of the linked pair is missing (with any errno).
    (mnt.path / "tar").mkdir()
    tries = {
        "cp": run(["cp", "-a", str(src), str(mnt.path / "cp")]),
        "tar": run(f"tar -C {src} -cf - . | tar -C {mnt.path / 'tar'} -xf -"),
        "rsync": run(["rsync", "-aH", f"{src}/", f"{mnt.path / 'rsync'}/"]),
    }
    for name, r in tries.items():
        assert r.returncode != 0, name
        assert "Operation not permitted" in r.stderr, (name, r.stderr)
        got = contents(mnt.path / name)
        assert got["c"] == b"alone\n" and len(got) == 2, (name, got)
    # The ways around it (documented in README Semantics) copy everything.
    (mnt.path / "tar2").mkdir()
    arounds = {
        "cp2": run(["cp", "-a", "--no-preserve=links", str(src), str(mnt.path / "cp2")]),
        "tar2": run(f"tar -C {src} --hard-dereference -cf - . | tar -C {mnt.path / 'tar2'} -xf -"),
        "rsync2": run(["rsync", "-a", f"{src}/", f"{mnt.path / 'rsync2'}/"]),
    }
    for name, r in arounds.items():
        assert r.returncode == 0, (name, r.stderr)
        assert contents(mnt.path / name) == everything, name
