"""Staging files and their journals, on a real local filesystem."""

from __future__ import annotations

import json
import os
from pathlib import Path

from zosfs.data.staging import Staging

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
