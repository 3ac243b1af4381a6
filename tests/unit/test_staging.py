"""Staging files and their journals, on a real local filesystem."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import trio

from zosfs.data.staging import Staging
from zosfs.fserror import FsError

MiB = 1024 * 1024


def test_a_journal_rewritten_shorter_still_reads_as_the_latest_record(tmp_path: Path) -> None:
    staging = Staging(str(tmp_path / "staging"), budget=MiB)
    staged = staging.create("dir/file", created=True)
    staged.write_journal(state="failed", reason="x" * 500)
    staged.write_journal(state="writing", reason="")
    [record] = staging.leftovers()
    assert record["state"] == "writing" and record["reason"] == "" and record["key"] == "dir/file"
    assert record["path"] == staged.path
    staged.discard()
    assert staging.leftovers() == [] and not os.path.exists(staged.path)


def test_release_frees_whole_pages_and_records_what_the_object_holds(tmp_path: Path) -> None:
    staging = Staging(str(tmp_path / "staging"), budget=8 * MiB)
    staged = staging.create("k", created=True)
    data = os.urandom(4 * MiB)
    staged.pwrite(data, 0)
    os.fsync(staged.fd)  # (so that st_blocks counts the data)
    # Too little to be worth it: nothing freed, the journal untouched.
    assert staged.release(0, 8192, appended=8192, etag="e1") == (0, 0)
    assert "appended" not in json.loads(Path(staged.journal).read_text())
    freed = staged.release(100, 3 * MiB + 100, appended=3 * MiB + 50, etag="e2")
    assert freed == (4096, 3 * MiB)
    record = json.loads(Path(staged.journal).read_text())
    assert record["appended"] == 3 * MiB + 50 and record["etag"] == "e2"
    assert os.fstat(staged.fd).st_blocks * 512 <= MiB + 8192
    assert staged.pread(4096, 0) == data[:4096]  # the partial page stays
    assert staged.pread(MiB, 3 * MiB) == data[3 * MiB :]
    assert staged.pread(4096, 8192) == bytes(4096)
    staged.discard()


def test_reserve_fails_at_once_with_enospc_when_nothing_can_free_the_budget(tmp_path: Path) -> None:
    staging = Staging(str(tmp_path / "staging"), budget=MiB)

    async def main() -> float:
        await staging.reserve(MiB)  # (the first write always fits)
        start = trio.current_time()
        with pytest.raises(FsError) as caught:
            await staging.reserve(4096, lambda: False, deadline=trio.current_time() + 60)
        assert caught.value.errno == errno.ENOSPC
        assert "staging_size=1048576" in caught.value.message and "set -o staging_size=" in caught.value.message
        return trio.current_time() - start

    assert trio.run(main) < 0.5
    assert staging.used == MiB  # (a refused reservation holds nothing)


def test_reserve_waits_while_room_is_being_made_but_not_past_its_deadline(tmp_path: Path) -> None:
    staging = Staging(str(tmp_path / "staging"), budget=MiB)
    calls = []

    async def main() -> float:
        await staging.reserve(MiB)
        start = trio.current_time()
        with pytest.raises(FsError) as caught:
            await staging.reserve(4096, lambda: calls.append(1) or True, deadline=trio.current_time() + 2.5)
        assert caught.value.errno == errno.ENOSPC and "write_deadline" in caught.value.message
        return trio.current_time() - start

    took = trio.run(main)
    assert 2.4 < took < 4 and len(calls) >= 2

    async def freed_meanwhile() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(staging.reserve, 4096, lambda: True, trio.current_time() + 30)
            await trio.sleep(0.3)
            staging.release(MiB)

    trio.run(freed_meanwhile)
    assert staging.used == 4096


def test_a_full_staging_filesystem_is_enospc_naming_the_directory(tmp_path: Path) -> None:
    staging = Staging(str(tmp_path / "staging"), budget=MiB)
    err = staging.local_error(OSError(errno.ENOSPC, "No space left on device"), "writing 'k'")
    assert err.errno == errno.ENOSPC
    assert f"the staging directory {staging.directory} is full (" in err.message and "bytes free" in err.message
    other = staging.local_error(OSError(errno.EIO, "Input/output error"), "writing 'k'")
    assert other.errno == errno.EIO and "failed" in other.message


def test_a_spare_staging_file_taken_for_a_key_reads_back_as_that_key(tmp_path: Path) -> None:
    """Spares (files made ahead, see Staging) read as nothing to recover;
    once taken, the journal names the key and state (a shorter record pads
    over the spare's, never leaving its tail), and close removes the rest."""
    staging = Staging(str(tmp_path / "staging"), budget=MiB)
    staging._housekeeping([])  # (what the housekeeping task does in its worker thread)
    spares = staging.leftovers()
    assert len(spares) == 4 and all(r["state"] == "uploaded" and r["spare"] for r in spares)
    staged = staging.create("k", created=True)
    assert os.path.basename(staged.journal) in {os.path.basename(r["journal"]) for r in spares}
    staged.write_journal(state="writing")
    records = {r["journal"]: r for r in staging.leftovers()}
    assert records[staged.journal]["key"] == "k" and records[staged.journal]["state"] == "writing"
    assert "spare" not in records[staged.journal]
    staged.pwrite(b"data", 0)
    staged.write_journal(state="uploaded")
    staging.close()  # (spares go; the taken one is its writer's to discard)
    assert {r["journal"] for r in staging.leftovers()} == {staged.journal}
    staged.discard()
    assert sorted(os.listdir(staging.directory)) == ["lock"]


def test_files_a_killed_daemon_was_still_making_are_removed_at_mount(tmp_path: Path) -> None:
    """A data file without its journal, or with an empty one, was never
    written (the journal comes first): the next mount removes it; anything
    holding data or a journal's record stays for recovery."""
    directory = tmp_path / "staging"
    staging = Staging(str(directory), budget=MiB)
    (directory / "a.data").write_bytes(b"")  # killed before its journal was made
    (directory / "b.data").write_bytes(b"")
    (directory / "b.json").write_bytes(b"")  # killed before its journal was written
    (directory / "c.data").write_bytes(b"kept")  # data without a journal: not ours to judge
    staged = staging.create("k", created=True)
    staged.pwrite(b"x", 0)
    staged.close()
    assert staging.remove_unfinished() == 3
    left = sorted(os.listdir(directory))
    assert left == sorted(["lock", "c.data", os.path.basename(staged.path), os.path.basename(staged.journal)])
    assert [r["key"] for r in staging.leftovers()] == ["k"]
