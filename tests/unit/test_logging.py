"""Where a mount's log goes (zosfs/daemon.py): syslog when its socket exists,
otherwise a size-rotated file, so that a background mount never logs nowhere."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from zosfs.daemon import LOG_FILE_BACKUPS, LOG_FILE_SIZE, SYSLOG_ENV, Source, log_destination, setup_logging
from zosfs.options import build, split_o


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging changes process-wide state; later tests need it back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quieted = {name: logging.getLogger(name).level for name in ("botocore", "boto3", "urllib3", "s3transfer")}
    yield
    for name, old in quieted.items():
        logging.getLogger(name).setLevel(old)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = build(split_o(f"endpoint=http://e,cache_dir={tmp_path}")).with_defaults_resolved()
    src = Source.parse("b:/p")
    monkeypatch.setenv(SYSLOG_ENV, str(tmp_path / "missing"))
    fallback = log_destination(o, src, foreground=False)
    assert fallback.startswith(str(tmp_path / "log" / "b-")) and fallback.endswith(".log")
    assert log_destination(o, Source.parse("b:/q"), foreground=False) != fallback  # one file per mount
    assert log_destination(o, src, foreground=True) == "stderr"
    (tmp_path / "sock").touch()
    monkeypatch.setenv(SYSLOG_ENV, str(tmp_path / "sock"))
    assert log_destination(o, src, foreground=False) == "syslog"
    given = build(split_o(f"endpoint=http://e,log_file={tmp_path / 'x.log'}"))
    assert log_destination(given, src, foreground=False) == str(tmp_path / "x.log")


def test_fallback_file_rotates_by_size_and_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    monkeypatch.setenv(SYSLOG_ENV, str(tmp_path / "missing"))
    o = build(split_o(f"endpoint=http://e,cache_dir={tmp_path}")).with_defaults_resolved()
    where = setup_logging(o, Source.parse("b"), foreground=False, secrets=["s3cr3t"])
    line = "x" * 1000
    for _ in range(LOG_FILE_SIZE * (LOG_FILE_BACKUPS + 2) // 1000):
        logging.getLogger("zosfs").info("%s", line)
    logging.getLogger("zosfs").warning("key s3cr3t leaked")
    files = sorted(Path(where).parent.iterdir())
    assert [f.name for f in files] == [Path(where).name] + [f"{Path(where).name}.{n}" for n in range(1, LOG_FILE_BACKUPS + 1)]
    assert all(f.stat().st_size <= LOG_FILE_SIZE for f in files)
    last = Path(where).read_text().splitlines()[-1]
    assert last.endswith("WARNING zosfs: key *** leaked") and "zosfs[" in last
