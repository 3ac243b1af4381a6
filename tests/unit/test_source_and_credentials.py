"""What is mounted (zosfs/source.py) and which credentials a mount uses
(zosfs/credentials.py): the command line's choices, checked without a server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zosfs.credentials import CredentialsError, resolve
from zosfs.source import Source

ENV = {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret", "HOME": "/nonexistent"}


@pytest.mark.parametrize(("text", "bucket", "prefix"), [
    ("b", "b", ""), ("b:/", "b", ""), ("b:/p", "b", "p/"), ("b:p/q/", "b", "p/q/"), ("b://p//q", "b", "p/q/"),
    ("b:/a.b/..c/...", "b", "a.b/..c/.../"),  # (dots inside a segment are ordinary characters)
])
def test_source_parse(text: str, bucket: str, prefix: str) -> None:
    assert Source.parse(text) == Source(bucket, prefix)


@pytest.mark.parametrize("text", ["b:/../x", "b:/a/./x", "b:a/..", "b:/.", ""])
def test_source_refuses_dot_segments_and_empty_buckets(text: str) -> None:
    with pytest.raises(ValueError) as e:
        Source.parse(text)
    assert "prefix" in str(e.value) or "bucket" in str(e.value)


def _file(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "creds"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_the_named_file_wins_over_the_environment(tmp_path: Path) -> None:
    # (s3fs's order too: a passwd_file on the command line before AWS_* variables.)
    path = _file(tmp_path, "FILEKEY:filesecret\n")
    creds = resolve("", path, "", "b", ENV)
    assert (creds.access_key, creds.secret_key, creds.source) == ("FILEKEY", "filesecret", path)


def test_a_named_file_others_can_read_is_refused_even_with_credentials_in_the_environment(tmp_path: Path) -> None:
    path = _file(tmp_path, "FILEKEY:filesecret\n", 0o644)
    with pytest.raises(CredentialsError) as e:
        resolve("", path, "", "b", ENV)
    assert "chmod 600" in str(e.value) and "filesecret" not in str(e.value)


def test_a_named_file_that_is_missing_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cannot read credentials file"):
        resolve("", str(tmp_path / "missing"), "", "b", ENV)


def test_without_a_named_file_the_environment_is_used(tmp_path: Path) -> None:
    creds = resolve("", "", "", "b", ENV)
    assert (creds.access_key, creds.secret_key) == ("ENVKEY", "envsecret")
    assert resolve("OTHER", "", "", "b", ENV).access_key == "OTHER"


@pytest.mark.parametrize("text", ["\ufeffFILEKEY:filesecret\n", "FILEKEY:filesecret\r\n", "  FILEKEY : filesecret \n",
                                  "\ufeff[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n"])
def test_files_edited_elsewhere_are_read(tmp_path: Path, text: str) -> None:
    # (a Windows editor's byte-order mark or CRLF line ends)
    creds = resolve("", _file(tmp_path, text), "", "b", {})
    assert (creds.access_key, creds.secret_key) == ("FILEKEY", "filesecret")


def test_an_empty_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="is empty"):
        resolve("", _file(tmp_path, "\n"), "", "b", {})
