"""Everyday tools on a real mount: what a user does with rsync, tar, vim, git
and SQLite, and what they check afterwards (the same bytes, modes, times and
links; a second rsync with nothing to do; a clean `git status`; a database
that passes its integrity check, also from the bytes in the bucket).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

from tests.support.mount import ZosfsMount, wait_until
from tests.support.objects import get, pattern

MiB = 1024 * 1024
# Small thresholds, so that a few MiB exercise appends, rewrites and multipart.
SMALL = {"append_chunk": "1M", "part_size": "5M", "rewrite_threshold": "10M", "multipart_threshold": "24M"}


def run(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{args} failed ({out.returncode}): {out.stderr[-2000:]}"
    return out.stdout


def make_tree(root: Path) -> None:
    """Files of several sizes (empty, below and above the thresholds), nested
    directories, odd names, an executable, a private file, a symlink, and
    times in the past."""
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "empty dir").mkdir()
    files = {
        "empty": b"",
        "one": b"1",
        "README": b"hello\n" * 100,
        "docs/report 2024.txt": pattern(70_000, 1),
        "docs/deep/er/blob.bin": pattern(3 * MiB + 7, 2),
        "docs/deep/big.bin": pattern(26 * MiB + 1, 3),
        "grüße.txt": "ünïcode\n".encode(),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    os.chmod(root / "README", 0o600)
    os.chmod(root / "docs" / "deep", 0o750)
    os.symlink("docs/report 2024.txt", root / "latest")
    for n, path in enumerate(sorted(root.rglob("*"), reverse=True)):  # (children before their directory)
        os.utime(path, (1_600_000_000 + n * 3600, 1_600_000_000 + n * 3600), follow_symlinks=False)
    os.utime(root, (1_600_000_000, 1_600_000_000))


def listing(root: Path) -> dict[str, tuple]:
    """What `ls -lR` would show that a copy must keep: type, mode, size,
    mtime (seconds) and link target, by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        mode = stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None
        out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), mode, size, int(st.st_mtime), target)
    return out


def same_tree(a: Path, b: Path) -> None:
    assert listing(b) == listing(a)
    run("diff", "-r", "--no-dereference", a, b)


def test_rsync_a_into_the_mount_keeps_everything_and_a_second_run_has_nothing_to_do(
    make_mount, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    m = make_mount(bucket, options=SMALL)
    dst = m.path / "backup"
    run("rsync", "-a", f"{src}/", f"{dst}/")
    same_tree(src, dst)
    assert run("rsync", "-a", "--itemize-changes", f"{src}/", f"{dst}/") == ""
    m.unmount()
    # Another mount (nothing cached): modes, times and links came from the bucket.
    m2 = make_mount(bucket, options=SMALL)
    same_tree(src, m2.path / "backup")
    assert run("rsync", "-a", "--itemize-changes", f"{src}/", f"{m2.path / 'backup'}/") == ""
    # A change on the source: the next rsync sends that file only, and the copy follows.
    (src / "docs" / "report 2024.txt").write_bytes(pattern(80_000, 4))
    changed = run("rsync", "-a", "--itemize-changes", f"{src}/", f"{m2.path / 'backup'}/")
    assert [line.split(" ", 1)[1] for line in changed.splitlines() if line.startswith(">f")] == ["docs/report 2024.txt"]
    same_tree(src, m2.path / "backup")


def test_cp_a_into_the_mount_keeps_everything_and_logs_no_warning(mnt: ZosfsMount, tmp_path: Path) -> None:
    """cp -a also tries to copy POSIX ACLs (system.posix_acl_access) onto
    every file: refused with ENOTSUP, which cp ignores, and which is no
    reason for a warning per file in the log."""
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    run("cp", "-a", src, mnt.path / "copy")
    same_tree(src, mnt.path / "copy")
    assert " WARNING " not in mnt.log_text(), mnt.tail(20)


def test_tar_extracts_into_the_mount_and_archives_it_back_identically(mnt: ZosfsMount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    run("tar", "--numeric-owner", "-C", src, "-cf", tmp_path / "a.tar", ".")
    (mnt.path / "x").mkdir()
    run("tar", "--numeric-owner", "-C", mnt.path / "x", "-xf", tmp_path / "a.tar")
    same_tree(src, mnt.path / "x")
    run("tar", "--numeric-owner", "-C", mnt.path / "x", "-cf", tmp_path / "b.tar", ".")

    def members(archive: Path) -> list[str]:
        return sorted(run("tar", "--numeric-owner", "--full-time", "-tvf", archive).splitlines())

    assert members(tmp_path / "b.tar") == members(tmp_path / "a.tar")


def test_vim_edits_a_file_in_the_mount(mnt: ZosfsMount, s3, bucket: str) -> None:
    path = mnt.path / "notes.txt"
    path.write_text("".join(f"line {n}: old text\n" for n in range(2000)))
    os.chmod(path, 0o640)
    run("vim.tiny", "-E", "-s", "-c", "%s/old/new/g", "-c", "wq", path, env={**os.environ, "HOME": str(mnt.path.parent)})
    expected = "".join(f"line {n}: new text\n" for n in range(2000))
    assert path.read_text() == expected
    assert get(s3, bucket, "notes.txt") == expected.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(mnt.path)) == ["notes.txt"], "vim left a swap or backup file behind"


def test_a_git_repository_in_the_mount(mnt: ZosfsMount, tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@example.org",
           "GIT_COMMITTER_NAME": "A", "GIT_COMMITTER_EMAIL": "a@example.org"}
    repo = mnt.path / "repo"
    run("git", "init", "-q", "-b", "main", repo, env=env)
    make_tree(repo)
    run("git", "add", "-A", cwd=repo, env=env)
    run("git", "commit", "-q", "-m", "first", cwd=repo, env=env)
    (repo / "README").write_bytes(b"changed\n")
    (repo / "new file").write_bytes(b"new\n")
    run("git", "mv", "one", "docs/one", cwd=repo, env=env)
    run("git", "add", "-A", cwd=repo, env=env)
    run("git", "commit", "-q", "-m", "second", cwd=repo, env=env)
    assert run("git", "status", "--porcelain", cwd=repo, env=env) == ""
    assert run("git", "rev-list", "--count", "HEAD", cwd=repo, env=env).strip() == "2"
    run("git", "fsck", "--strict", cwd=repo, env=env)
    run("git", "gc", "-q", cwd=repo, env=env)  # packs: mmap'd reads, renames, deletes
    run("git", "fsck", "--strict", cwd=repo, env=env)
    clone = tmp_path / "clone"
    run("git", "clone", "-q", repo, clone, env=env)
    assert (clone / "README").read_bytes() == b"changed\n"
    assert (clone / "docs" / "one").read_bytes() == b"1"
    assert (clone / "docs" / "deep" / "big.bin").read_bytes() == pattern(26 * MiB + 1, 3)
    assert run("git", "status", "--porcelain", cwd=repo, env=env) == ""


def test_an_sqlite_database_in_the_mount(mnt: ZosfsMount, s3, bucket: str, tmp_path: Path) -> None:
    """Random writes, fsync at every commit, a rollback journal created and
    deleted each time: after close the database, and the object in the
    bucket, pass SQLite's integrity check and hold every committed row."""
    path = mnt.path / "app.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    for batch in range(20):
        with con:
            con.executemany("INSERT INTO t (body) VALUES (?)", [(f"row {batch}-{n} " + "x" * 200,) for n in range(50)])
    with con:
        con.execute("DELETE FROM t WHERE id % 7 = 0")
        con.execute("UPDATE t SET body = 'updated' WHERE id % 5 = 0")
    con.close()
    expected = 1000 - 1000 // 7
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (expected,)
    assert con.execute("SELECT count(*) FROM t WHERE body = 'updated'").fetchone() == (200 - 200 // 7,)
    con.close()
    assert sorted(os.listdir(mnt.path)) == ["app.db"]
    copy = tmp_path / "from-bucket.db"
    copy.write_bytes(get(s3, bucket, "app.db"))
    con = sqlite3.connect(copy)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (expected,)
    con.close()


def test_tail_f_on_one_mount_follows_a_log_appended_through_another(make_mount, bucket: str, tmp_path: Path) -> None:
    """Two machines: one appends lines to a log (`>>`), the other runs
    `tail -f` on it and sees every line, within attr_timeout plus
    append_delay, although its handle was opened before they were written."""
    writer = make_mount(bucket, options={"append_delay": "0.5"})
    reader = make_mount(bucket, options={"attr_timeout": "1", "entry_timeout": "1"})
    with open(writer.path / "app.log", "w") as f:
        f.write("started\n")
    out = tmp_path / "tail.out"
    with open(out, "wb") as sink:
        tail = subprocess.Popen(["tail", "-f", "-s", "0.2", str(reader.path / "app.log")], stdout=sink,
                                stderr=subprocess.PIPE)
        try:
            lines = ["started\n"]
            for n in range(3):
                time.sleep(0.5)
                line = f"request {n} served\n"
                with open(writer.path / "app.log", "a") as f:
                    f.write(line)
                lines.append(line)
                expected = "".join(lines)
                assert wait_until(lambda: out.read_text() == expected, timeout=10), (
                    f"tail -f shows {out.read_text()!r}, not {expected!r}")
            # A writer that keeps the log open: its lines arrive by append_delay.
            with open(writer.path / "app.log", "a") as f:
                f.write("still open\n")
                f.flush()
                lines.append("still open\n")
                expected = "".join(lines)
                assert wait_until(lambda: out.read_text() == expected, timeout=10), (
                    f"tail -f shows {out.read_text()!r}, not {expected!r}")
        finally:
            tail.terminate()
            _, err = tail.communicate(timeout=10)
    assert err == b"", err
