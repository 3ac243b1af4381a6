"""The namespace on a real mount: the everyday tools (ls, find, cp -r, mv,
rm -r, mkdir -p, rmdir, ln) behave as on a local disk within the documented
semantics, odd keys put by other tools neither crash nor hide anything,
listings of any size are complete, caches expire, and an error inside a
handler never takes the mount down.

Every test runs once with each ListObjects version (`-o list_api=v2` and
`v1`; the ZOS SDK manual documents only V1). ZOSFS_TEST_LIST_API=v1 (or v2)
runs one of them only."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.listapi import list_api, make_mount  # noqa: F401 (fixtures)
from tests.support.mount import ZosfsMount
from tests.support.rgw import LocalRGW
from zosfs.namespace.names import RESERVED_PREFIX

FAST = {"attr_timeout": "1", "entry_timeout": "1", "negative_timeout": "1", "dir_cache_ttl": "1"}
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
MountFactory = Callable[..., ZosfsMount]
LIST_OPS = {"v1": "ListObjects", "v2": "ListObjectsV2"}  # the proxy's names of the two requests


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """The bucket's keys, without zosfs's own (the change feed under .zosfs/)."""
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith(RESERVED_PREFIX)]
    return out


def snapshot(s3: Any, bucket: str) -> dict[str, tuple[str, Any, int]]:
    """Every object with its ETag, LastModified and size (zosfs's own left out)."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            if not o["Key"].startswith(RESERVED_PREFIX):
                out[o["Key"]] = (o["ETag"], o["LastModified"], o["Size"])
    return out


def body(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def put_many(s3: Any, bucket: str, items: dict[str, bytes]) -> None:
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items()))


def run(*args: str | os.PathLike[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"}, **kwargs)


def tree(root: Path) -> dict[str, Any]:
    """path -> 'dir' or file bytes, for everything below root."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = "dir"
        for f in filenames:
            out[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_bytes()
    return out


def renameat2(old: Path, new: Path, flags: int) -> int:
    """renameat2(2); returns 0 or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags))
    return 0 if rc == 0 else ctypes.get_errno()


def errno_of(fn: Any, *args: Any) -> int:
    try:
        fn(*args)
    except OSError as err:
        return err.errno
    return 0


# -- everyday tools ----------------------------------------------------------------------


def test_ls_l_and_find_show_a_tree_put_with_boto3(mnt: ZosfsMount, s3) -> None:
    put_many(s3, mnt.bucket, {"top.txt": b"1", "a/one": b"22", "a/b/two": b"333", "a/b/c/three": b"", "e/": b""})
    out = run("find", mnt.path, "-printf", "%y %s %P\n", check=True).stdout
    found = {line.split(" ", 2)[2]: line.split(" ", 2)[:2] for line in out.splitlines() if line.split(" ", 2)[2]}
    assert found == {
        "top.txt": ["f", "1"], "a": ["d", "0"], "a/one": ["f", "2"], "a/b": ["d", "0"], "a/b/two": ["f", "3"],
        "a/b/c": ["d", "0"], "a/b/c/three": ["f", "0"], "e": ["d", "0"],
    }
    out = run("ls", "-l", mnt.path / "a", check=True).stdout.splitlines()
    assert out[0].startswith("total")
    assert [line.split()[-1] for line in out[1:]] == ["b", "one"]
    assert out[1].startswith("d") and out[2].startswith("-")
    assert out[2].split()[4] == "2"
    # ls -a lists "." and ".." as on a local disk, with their inode numbers.
    out = run("ls", "-ai1", mnt.path / "a" / "b", check=True).stdout.split()
    assert out[1::2] == [".", "..", "c", "two"]
    assert int(out[0]) == os.stat(mnt.path / "a" / "b").st_ino
    assert int(out[2]) == os.stat(mnt.path / "a").st_ino
    assert sorted(os.listdir(mnt.path / "a" / "b")) == ["c", "two"]


def test_cp_r_of_a_nested_tree(mnt: ZosfsMount, s3, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "emptydir").mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "empty").write_bytes(b"")
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (src / "sub" / "deeper" / "x.txt").write_text("deep\n")
    os.chmod(src / "a.txt", 0o640)
    os.utime(src / "a.txt", (1_500_000_000, 1_500_000_000))
    run("cp", "-rp", src, mnt.path / "copy", check=True)
    assert run("diff", "-r", src, mnt.path / "copy").returncode == 0
    assert sorted(keys(s3, mnt.bucket)) == [
        "copy/", "copy/a.txt", "copy/big.bin", "copy/empty", "copy/emptydir/", "copy/sub/", "copy/sub/deeper/",
        "copy/sub/deeper/x.txt",
    ]
    assert body(s3, mnt.bucket, "copy/big.bin") == (src / "big.bin").read_bytes()
    st = os.stat(mnt.path / "copy" / "a.txt")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o640, 1_500_000_000)
    assert mnt.unmount() == 0
    mnt.start()
    assert tree(mnt.path / "copy") == tree(src)
    st = os.stat(mnt.path / "copy" / "a.txt")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o640, 1_500_000_000)


def test_mv_of_a_file(mnt: ZosfsMount, s3) -> None:
    (mnt.path / "d").mkdir()
    (mnt.path / "a.txt").write_bytes(b"content of a")
    (mnt.path / "d" / "old").write_bytes(b"to be replaced")
    run("mv", mnt.path / "a.txt", mnt.path / "d" / "b.txt", check=True)
    assert sorted(keys(s3, mnt.bucket)) == ["d/", "d/b.txt", "d/old"]
    assert body(s3, mnt.bucket, "d/b.txt") == b"content of a"
    assert not (mnt.path / "a.txt").exists()
    assert (mnt.path / "d" / "b.txt").read_bytes() == b"content of a"
    run("mv", mnt.path / "d" / "b.txt", mnt.path / "d" / "old", check=True)  # over an existing file
    assert sorted(keys(s3, mnt.bucket)) == ["d/", "d/old"]
    assert body(s3, mnt.bucket, "d/old") == b"content of a"
    assert sorted(os.listdir(mnt.path / "d")) == ["old"]
    assert (mnt.path / "d" / "old").read_bytes() == b"content of a"


def test_mv_of_a_non_empty_directory(mnt: ZosfsMount, s3) -> None:
    put_many(s3, mnt.bucket, {f"src/implicit/f{i}": f"{i}".encode() * i for i in range(20)})
    (mnt.path / "src" / "made").mkdir()
    (mnt.path / "src" / "made" / "deep").mkdir()
    (mnt.path / "src" / "made" / "deep" / "x").write_bytes(b"x" * 100)
    (mnt.path / "src" / "top").write_bytes(b"top")
    before = tree(mnt.path / "src")
    (mnt.path / "dst").mkdir()
    run("mv", mnt.path / "src", mnt.path / "dst" / "moved", check=True)
    assert not (mnt.path / "src").exists()
    assert "src" not in os.listdir(mnt.path)
    assert keys(s3, mnt.bucket, "src") == []
    assert tree(mnt.path / "dst" / "moved") == before
    moved = keys(s3, mnt.bucket, "dst/moved/")
    assert sorted(moved) == sorted(
        ["dst/moved/made/", "dst/moved/made/deep/", "dst/moved/made/deep/x", "dst/moved/top"]
        + [f"dst/moved/implicit/f{i}" for i in range(20)]
    )
    assert body(s3, mnt.bucket, "dst/moved/implicit/f7") == b"7" * 7
    # Renaming back over an empty directory is allowed; over a non-empty one not.
    (mnt.path / "empty").mkdir()
    os.rename(mnt.path / "dst" / "moved", mnt.path / "empty")
    assert tree(mnt.path / "empty") == before
    (mnt.path / "full").mkdir()
    (mnt.path / "full" / "f").write_bytes(b"")
    assert errno_of(os.rename, mnt.path / "empty", mnt.path / "full") == errno.ENOTEMPTY
    assert errno_of(os.rename, mnt.path / "empty", mnt.path / "empty" / "made" / "inside") == errno.EINVAL
    assert tree(mnt.path / "empty") == before


def test_rm_r_of_a_tree(make_mount, bucket: str, s3, rgw: LocalRGW) -> None:
    put_many(s3, bucket, {f"t/{d}/{i}": b"x" for d in ("a", "b", "a/c") for i in range(15)})
    s3.put_object(Bucket=bucket, Key="t/b/", Body=b"")
    s3.put_object(Bucket=bucket, Key="keep", Body=b"")
    with FaultProxy(rgw.endpoint) as proxy:
        m = make_mount(bucket, endpoint=proxy.endpoint)
        run("rm", "-r", m.path / "t", check=True)
        assert keys(s3, bucket) == ["keep"]
        assert os.listdir(m.path) == ["keep"]
        # Removing writes nothing (no markers for emptied implicit directories, no copies) but the
        # change feed's records for other mounts.
        user_appends = [r for r in proxy.records("AppendObject") if not r.key.startswith(RESERVED_PREFIX)]
        assert proxy.count("PutObject") == proxy.count("CopyObject") == len(user_appends) == 0
        assert proxy.count("DeleteObject") + 1000 * proxy.count("DeleteObjects") >= 46
        m.unmount()


def test_mkdir_p_and_rmdir(mnt: ZosfsMount, s3) -> None:
    run("mkdir", "-p", mnt.path / "a" / "b" / "c", check=True)
    assert sorted(keys(s3, mnt.bucket)) == ["a/", "a/b/", "a/b/c/"]
    run("mkdir", "-p", mnt.path / "a" / "b" / "c", check=True)  # again: nothing to do
    assert errno_of(os.mkdir, mnt.path / "a") == errno.EEXIST
    assert errno_of(os.rmdir, mnt.path / "a") == errno.ENOTEMPTY
    s3.put_object(Bucket=mnt.bucket, Key="other/implicit/file", Body=b"")
    assert errno_of(os.rmdir, mnt.path / "other") == errno.ENOTEMPTY
    assert errno_of(os.rmdir, mnt.path / "other" / "implicit") == errno.ENOTEMPTY
    (mnt.path / "a" / "b" / "c" / "f").write_bytes(b"")
    assert errno_of(os.rmdir, mnt.path / "a" / "b" / "c") == errno.ENOTEMPTY
    assert errno_of(os.rmdir, mnt.path / "a" / "b" / "c" / "f") == errno.ENOTDIR
    assert errno_of(os.unlink, mnt.path / "a" / "b") == errno.EISDIR
    os.unlink(mnt.path / "a" / "b" / "c" / "f")
    os.rmdir(mnt.path / "a" / "b" / "c")
    assert sorted(keys(s3, mnt.bucket)) == ["a/", "a/b/", "other/implicit/file"]
    run("rmdir", "-p", mnt.path / "a" / "b")  # fails in the end: the mount point is not empty
    assert sorted(keys(s3, mnt.bucket)) == ["other/implicit/file"]
    assert sorted(os.listdir(mnt.path)) == ["other"]


def test_hard_links_are_refused_with_eperm(mnt: ZosfsMount) -> None:
    (mnt.path / "f").write_bytes(b"x")
    assert errno_of(os.link, mnt.path / "f", mnt.path / "g") == errno.EPERM
    assert run("ln", mnt.path / "f", mnt.path / "g").returncode != 0
    assert os.listdir(mnt.path) == ["f"]


def test_rename_flags(mnt: ZosfsMount, s3) -> None:
    (mnt.path / "a").write_bytes(b"A")
    (mnt.path / "b").write_bytes(b"B")
    (mnt.path / "d").mkdir()
    assert renameat2(mnt.path / "a", mnt.path / "b", RENAME_NOREPLACE) == errno.EEXIST
    assert renameat2(mnt.path / "a", mnt.path / "d", RENAME_NOREPLACE) == errno.EEXIST
    assert renameat2(mnt.path / "a", mnt.path / "b", RENAME_EXCHANGE) == errno.EINVAL
    assert (body(s3, mnt.bucket, "a"), body(s3, mnt.bucket, "b")) == (b"A", b"B")
    assert renameat2(mnt.path / "a", mnt.path / "c", RENAME_NOREPLACE) == 0
    assert sorted(keys(s3, mnt.bucket)) == ["b", "c", "d/"]
    assert (mnt.path / "c").read_bytes() == b"A"


def test_listed_directory_follows_appends_to_a_renamed_file(mnt: ZosfsMount, s3) -> None:
    """A regression: readdir took the size and ETag of a cached listing over
    the newer ones of this mount's own appends, and reads then failed."""
    (mnt.path / "e").write_bytes(b"12345")
    assert os.listdir(mnt.path) == ["e"]  # the listing is cached from now on
    os.rename(mnt.path / "e", mnt.path / "b")
    with open(mnt.path / "b", "r+b") as f:
        f.seek(195)
        f.write(b"xy")
    assert os.listdir(mnt.path) == ["b"]
    expected = b"12345" + bytes(190) + b"xy"
    assert (mnt.path / "b").read_bytes() == expected
    with open(mnt.path / "b", "ab") as f:
        f.write(b"abcd")
    assert os.listdir(mnt.path) == ["b"]
    assert (mnt.path / "b").read_bytes() == expected + b"abcd"
    assert body(s3, mnt.bucket, "b") == expected + b"abcd"


def test_rename_over_a_file_open_for_writing(mnt: ZosfsMount, s3) -> None:
    (mnt.path / "a").write_bytes(b"new content")
    with open(mnt.path / "b", "wb") as f:
        f.write(b"old, still being written")
        f.flush()
        os.rename(mnt.path / "a", mnt.path / "b")
        f.write(b", and more")  # goes to the replaced file, as on a local disk
    assert keys(s3, mnt.bucket) == ["b"]
    assert body(s3, mnt.bucket, "b") == b"new content"
    assert (mnt.path / "b").read_bytes() == b"new content"


def test_names_too_long(mnt: ZosfsMount, s3) -> None:
    assert errno_of(open, mnt.path / ("n" * 256), "w") == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, mnt.path / ("n" * 256)) == errno.ENAMETOOLONG
    assert errno_of(os.stat, mnt.path / ("\u00e9" * 128)) == errno.ENAMETOOLONG  # 256 bytes
    (mnt.path / ("n" * 255)).write_bytes(b"fits")
    # Four directories of 250 bytes make a prefix of 1,004 bytes: 20 more fit in a key, 21 do not.
    deep = mnt.path
    for c in "wxyz":
        deep = deep / (c * 250)
        deep.mkdir()
    (deep / ("f" * 20)).write_bytes(b"1024")
    assert errno_of(open, deep / ("f" * 21), "w") == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, deep / ("d" * 20)) == errno.ENAMETOOLONG  # its marker key ends in '/'
    os.mkdir(deep / ("d" * 19))
    assert errno_of(os.rename, deep / ("f" * 20), deep / ("g" * 21)) == errno.ENAMETOOLONG
    assert sorted(len(k.encode()) for k in keys(s3, mnt.bucket)) == [251, 255, 502, 753, 1004, 1024, 1024]
    assert sorted(os.listdir(deep)) == ["d" * 19, "f" * 20]


# -- other tools' keys -------------------------------------------------------------------------

ODD_KEYS = {
    "a//b": "a//",
    "x": "x",
    "seg/" + "s" * 300 + "/f": "seg/" + "s" * 300 + "/",
    "seg/" + "t" * 256: "seg/" + "t" * 256,
    "p/./q": "p/./",
    "p/../r": "p/../",
    "p/.": "p/.",
    "/leading": "/",
}
NORMAL_KEYS = [
    "x/y", "seg/ok", "p/ok", "sp ace/file with space", "plus+sign", "per%cent", "per%25cent",
    "uni/\u00e9t\u00e9 \u6587\u4ef6", "normal.txt", "q?&=#", "tilde~/star*", "new\nline", "ctl\x01char",
]


def test_odd_keys_are_skipped_not_fatal_and_never_changed(make_mount, bucket: str, s3) -> None:
    put_many(s3, bucket, {k: k.encode() for k in [*ODD_KEYS, *NORMAL_KEYS]})
    before = snapshot(s3, bucket)
    m = make_mount(bucket, options={**FAST})
    for _ in range(2):  # a second listing after the caches expired logs nothing new
        assert tree(m.path) == {
            "a": "dir", "x": "dir", "x/y": b"x/y", "seg": "dir", "seg/ok": b"seg/ok", "p": "dir", "p/ok": b"p/ok",
            "sp ace": "dir", "sp ace/file with space": b"sp ace/file with space", "plus+sign": b"plus+sign",
            "per%cent": b"per%cent", "per%25cent": b"per%25cent", "uni": "dir",
            "uni/\u00e9t\u00e9 \u6587\u4ef6": "uni/\u00e9t\u00e9 \u6587\u4ef6".encode(), "normal.txt": b"normal.txt",
            "q?&=#": b"q?&=#", "tilde~": "dir", "tilde~/star*": b"tilde~/star*", "new\nline": b"new\nline",
            "ctl\x01char": b"ctl\x01char",
        }
        assert os.path.isdir(m.path / "x")  # the directory wins over the file
        assert errno_of(os.stat, m.path / ("t" * 256)) == errno.ENAMETOOLONG
        time.sleep(1.1)
    log = m.log_text()
    for key, logged in ODD_KEYS.items():
        lines = [line for line in log.splitlines() if f"skipping key {logged!r}" in line]
        assert len(lines) == 1, (key, lines)
    assert snapshot(s3, bucket) == before  # listing and reading changed nothing
    assert body(s3, bucket, "x") == b"x"  # the hidden file is still there


def test_a_directory_of_1100_entries_lists_completely_and_in_order(make_mount, bucket: str, s3, rgw: LocalRGW,
                                                                    list_api: str) -> None:
    files = {f"big/file-{i:04}": b"" for i in range(1050)}
    files.update({f"big/sub-{i:02}/x": b"" for i in range(50)})
    files["big/file-0500.txt"] = b"sorts between file-0500 and file-0501"
    put_many(s3, bucket, files)
    expected = sorted({k[4:].split("/")[0] for k in files})
    assert len(expected) == 1101
    with FaultProxy(rgw.endpoint) as proxy:
        m = make_mount(bucket, endpoint=proxy.endpoint, options={"no_metadata": ""})
        proxy.reset_stats()
        names = os.listdir(m.path / "big")
        used, unused = LIST_OPS[list_api], LIST_OPS["v2" if list_api == "v1" else "v1"]
        assert proxy.count(used) >= 2 and proxy.count(unused) == 0  # several pages, of the version asked for
        assert names == expected  # readdir returns them in key order
        out = run("ls", "-1", m.path / "big", check=True).stdout.splitlines()
        assert out == expected
        assert len(os.listdir(m.path / "big" / "sub-49")) == 1
        m.unmount()


# -- caches ----------------------------------------------------------------------------------------


def test_changes_by_another_client_appear_after_the_ttls(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="d/f", Body=b"one")
    s3.put_object(Bucket=bucket, Key="d/gone", Body=b"bye")
    m = make_mount(bucket, options={**FAST})
    d = m.path / "d"
    assert (d / "f").read_bytes() == b"one"
    assert os.stat(d / "f").st_size == 3
    assert not (d / "new").exists()
    assert sorted(os.listdir(d)) == ["f", "gone"]
    s3.put_object(Bucket=bucket, Key="d/f", Body=b"second version")
    s3.put_object(Bucket=bucket, Key="d/new", Body=b"hello")
    s3.put_object(Bucket=bucket, Key="d/sub/implicit", Body=b"")
    s3.delete_object(Bucket=bucket, Key="d/gone")
    time.sleep(1.5)
    assert os.stat(d / "f").st_size == 14
    assert (d / "f").read_bytes() == b"second version"
    assert (d / "new").read_bytes() == b"hello"
    assert not (d / "gone").exists()
    assert sorted(os.listdir(d)) == ["f", "new", "sub"]
    # A type change by another client: the file becomes a directory.
    s3.delete_object(Bucket=bucket, Key="d/new")
    s3.put_object(Bucket=bucket, Key="d/new/inside", Body=b"")
    time.sleep(1.5)
    assert os.path.isdir(d / "new")
    assert os.listdir(d / "new") == ["inside"]


def requests(m: ZosfsMount) -> dict[str, int]:
    """Requests the daemon has sent, by operation."""
    return {op: int(v["count"]) for op, v in m.stats()["requests"].items()}


def sent_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


@contextlib.contextmanager
def held(*paths: Path) -> Iterator[None]:
    """Keep directories looked up: other tests drop the kernel's dentries
    (drop_caches), and looking a directory up again sends requests that a
    test counting them does not expect. O_PATH holds them without opendir."""
    fds = [os.open(p, os.O_PATH) for p in paths]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)


def read_when_there(path: Path, since: float, bound: float) -> tuple[bytes | None, float]:
    """Poll until `path` can be read or `bound` seconds after `since` have
    passed: its bytes (None if never) and when it was read, after `since`."""
    while True:
        try:
            return path.read_bytes(), time.monotonic() - since
        except FileNotFoundError:
            if time.monotonic() - since > bound:
                return None, time.monotonic() - since
            time.sleep(0.02)


@pytest.mark.parametrize("entries", [1, 1001])  # a small directory is listed again, a large one probed
def test_a_file_made_elsewhere_opens_by_name_within_a_second_while_the_listing_is_cached(
        make_mount, bucket: str, s3, entries: int) -> None:
    put_many(s3, bucket, {f"d/old-{i:04}": b"" for i in range(entries)})
    m = make_mount(bucket, options={"dir_cache_ttl": "60"})  # negative_timeout: the default, 1 s
    d = m.path / "d"
    assert len(os.listdir(d)) == entries
    assert not (d / "new").exists()  # "no such file", cached by zosfs and the kernel
    s3.put_object(Bucket=bucket, Key="d/new", Body=b"made elsewhere")
    made = time.monotonic()
    data, took = read_when_there(d / "new", made, bound=10)
    assert data == b"made elsewhere"
    assert took < 1.5, f"a file made elsewhere took {took:.2f} s to open by name"


def test_the_kernel_keeps_a_negative_answer_no_longer_than_zosfs(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="d/old", Body=b"")
    m = make_mount(bucket, options={"dir_cache_ttl": "60", "negative_timeout": "4"})
    d = m.path / "d"
    assert os.listdir(d) == ["old"]
    listed = time.monotonic()
    time.sleep(2)
    # Answered by the listing, which can say so for about 2 s more: the kernel
    # must not keep the answer for the whole negative_timeout from now.
    assert not (d / "new").exists()
    s3.put_object(Bucket=bucket, Key="d/new", Body=b"new")
    data, took = read_when_there(d / "new", listed, bound=15)
    assert data == b"new"
    # (Kept for the whole negative_timeout from the lookup, it would be found
    # 6 s after the listing; 5.5 leaves room for a loaded machine.)
    assert took < 5.5, f"found {took:.2f} s after the listing, whose negative answers last 4 s"


def test_lookups_of_a_missing_name_within_negative_timeout_send_no_requests(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="listed/f", Body=b"")
    s3.put_object(Bucket=bucket, Key="probed/f", Body=b"")
    m = make_mount(bucket, options={"negative_timeout": "3", "dir_cache_ttl": "60", "attr_timeout": "60",
                                    "entry_timeout": "60"})
    assert os.listdir(m.path / "listed") == ["f"]
    assert (m.path / "probed").is_dir()  # looked up, never listed
    with held(m.path / "listed", m.path / "probed"):
        lookups_within_and_after_the_window(m)


def lookups_within_and_after_the_window(m: ZosfsMount) -> None:
    before = requests(m)
    for _ in range(20):
        assert not (m.path / "listed" / "missing").exists()  # the young listing says so
    assert requests(m) == before
    assert not (m.path / "probed" / "missing").exists()
    first = requests(m)
    probe = sent_since(before, first)
    assert probe == {"HeadObject": 1, "ListObjects": 1}  # the name, and keys below it
    for _ in range(20):
        assert not (m.path / "probed" / "missing").exists()
        assert not (m.path / "listed" / "missing").exists()
    assert requests(m) == first
    time.sleep(3.2)  # the answers are too old now: the server is asked again
    assert not (m.path / "probed" / "missing").exists()
    assert sent_since(first, requests(m)) == probe
    again = requests(m)
    assert not (m.path / "listed" / "missing").exists()
    assert sent_since(again, requests(m)) == {"ListObjects": 1}  # a small directory: listed again


def test_making_many_files_costs_a_listing_per_negative_timeout_not_a_probe_per_name(make_mount, bucket: str) -> None:
    # (Long attribute and entry timeouts: revalidating the directory itself
    # would cost requests of its own.)
    mnt = make_mount(bucket, options={"attr_timeout": "60", "entry_timeout": "60"})
    d = mnt.path / "many"
    d.mkdir()
    with held(d):
        before = requests(mnt)
        started = time.monotonic()
        for i in range(300):
            (d / f"f{i:03}").write_bytes(b"x")  # each open(O_CREAT) looks the new name up first
        took = time.monotonic() - started
    sent = sent_since(before, requests(mnt))
    assert "HeadObject" not in sent
    assert sent.get("ListObjects", 0) <= took / 1.0 + 1, (sent, took)  # negative_timeout: 1 s
    assert sorted(os.listdir(d)) == [f"f{i:03}" for i in range(300)]


@pytest.mark.parametrize("entry_timeout", ["1", "60"])  # found by lookup, or by getattr of a known name
def test_a_file_replaced_by_a_symlink_and_back(make_mount, bucket: str, s3, entry_timeout: str) -> None:
    s3.put_object(Bucket=bucket, Key="t", Body=b"plain file")
    m = make_mount(bucket, options={**FAST, "entry_timeout": entry_timeout})
    t = m.path / "t"
    assert stat.S_ISREG(os.lstat(t).st_mode)
    s3.put_object(Bucket=bucket, Key="t", Body=b"elsewhere", Metadata={"mode": str(stat.S_IFLNK | 0o777)})
    time.sleep(1.5)
    assert stat.S_ISLNK(os.lstat(t).st_mode)
    assert os.readlink(t) == "elsewhere"
    s3.put_object(Bucket=bucket, Key="t", Body=b"a file again")
    time.sleep(1.5)
    st = os.lstat(t)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 12
    assert t.read_bytes() == b"a file again"


def test_own_changes_are_visible_at_once_despite_long_ttls(make_mount, bucket: str, s3) -> None:
    m = make_mount(bucket, options={"attr_timeout": "60", "entry_timeout": "60", "negative_timeout": "60",
                                    "dir_cache_ttl": "60"})
    assert os.listdir(m.path) == []
    assert not (m.path / "f").exists()
    (m.path / "f").write_bytes(b"1")
    assert os.listdir(m.path) == ["f"]
    os.rename(m.path / "f", m.path / "g")
    assert os.listdir(m.path) == ["g"]
    assert not (m.path / "f").exists()
    (m.path / "f").mkdir()
    assert sorted(os.listdir(m.path)) == ["f", "g"]
    os.rmdir(m.path / "f")
    os.unlink(m.path / "g")
    assert os.listdir(m.path) == []
    os.symlink("x", m.path / "g")  # a new kind under an old name
    assert os.readlink(m.path / "g") == "x"
    os.unlink(m.path / "g")
    (m.path / "g").write_bytes(b"now a file")
    assert stat.S_ISREG(os.lstat(m.path / "g").st_mode)
    assert (m.path / "g").read_bytes() == b"now a file"
    assert keys(s3, bucket) == ["g"]


# -- the mount as a whole -----------------------------------------------------------------------


def test_statfs_reports_a_large_filesystem(mnt: ZosfsMount) -> None:
    sv = os.statvfs(mnt.path)
    assert sv.f_namemax == 255
    assert sv.f_bavail * sv.f_frsize >= 2**50
    out = run("df", "-P", mnt.path, check=True).stdout.splitlines()
    fields = out[1].split()
    assert int(fields[3]) * 1024 >= 2**50  # available, in 1K blocks
    assert fields[-1] == str(mnt.path)


def test_mount_of_a_prefix(make_mount, bucket: str, s3) -> None:
    put_many(s3, bucket, {"sub/dir/a.txt": b"a", "sub/dir/d/b": b"b", "sub/other": b"o", "top": b"t", "sub/dirty": b"no"})
    m = make_mount(bucket, prefix="sub/dir")
    assert sorted(os.listdir(m.path)) == ["a.txt", "d"]
    (m.path / "new").write_bytes(b"n")
    (m.path / "nd").mkdir()
    os.rename(m.path / "a.txt", m.path / "d" / "a2")
    assert sorted(keys(s3, bucket)) == ["sub/dir/d/a2", "sub/dir/d/b", "sub/dir/nd/", "sub/dir/new", "sub/dirty",
                                        "sub/other", "top"]
    assert not (m.path / "other").exists() and not (m.path / "top").exists()
    m2 = make_mount(bucket, prefix="not/there/yet")
    assert os.listdir(m2.path) == []
    (m2.path / "f").write_bytes(b"")
    assert "not/there/yet/f" in keys(s3, bucket)


def test_an_error_inside_a_handler_is_eio_and_the_mount_lives_on(make_mount, bucket: str, s3,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    s3.put_object(Bucket=bucket, Key="d/f", Body=b"data")
    monkeypatch.setenv("ZOSFS_TEST_FAULT", "lookup:1,opendir:1,mkdir:1")
    m = make_mount(bucket, check_log=False)
    assert errno_of(os.stat, m.path / "d") == errno.EIO
    assert os.path.isdir(m.path / "d")
    assert errno_of(os.listdir, m.path / "d") == errno.EIO
    assert os.listdir(m.path / "d") == ["f"]
    assert errno_of(os.mkdir, m.path / "new") == errno.EIO
    os.mkdir(m.path / "new")
    assert (m.path / "d" / "f").read_bytes() == b"data"
    assert m.mounted and m.process.poll() is None
    log = m.log_text()
    for op in ("lookup", "opendir", "mkdir"):
        assert len(re.findall(rf"internal error in {op}; answering EIO", log)) == 1, op
    assert log.count("Traceback") == 3
    assert m.unmount() == 0
