"""Mount options (zosfs/options.py) and how the command line reports bad ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from zosfs import cli
from zosfs.options import (
    FIELDS,
    GiB,
    KiB,
    MiB,
    OptionError,
    Options,
    build,
    parse_bool,
    parse_octal,
    parse_size,
    split_o,
)


def opts(text: str) -> Options:
    return build(split_o(text))


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("512K", 512 * KiB), ("512k", 512 * KiB), ("8M", 8 * MiB), ("8MiB", 8 * MiB), ("8MB", 8 * MiB),
     ("2G", 2 * GiB), ("1T", 1024 * GiB), ("1.5M", 3 * MiB // 2), (" 3 G ", 3 * GiB), ("0", 0)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1M", "1X", "1 M B x", "ten"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_parse_bool() -> None:
    for text in ("", "1", "yes", "TRUE", "on"):
        assert parse_bool(text) is True
    for text in ("0", "no", "False", "off"):
        assert parse_bool(text) is False
    with pytest.raises(ValueError):
        parse_bool("maybe")


def test_parse_octal_umask() -> None:
    assert parse_octal("022") == 0o022
    assert parse_octal("0027") == 0o027
    assert parse_octal("77") == 0o077
    with pytest.raises(ValueError):
        parse_octal("089")
    assert opts("umask=007").umask == 0o007


def test_values_and_flags() -> None:
    o = opts("endpoint=http://127.0.0.1:8000,uid=1000,gid=100,allow_other,ro,no_metadata=yes,"
             "attr_timeout=0.5,cache_size=64M,max_requests=8")
    assert o.endpoint == "http://127.0.0.1:8000"
    assert (o.uid, o.gid) == (1000, 100)
    assert o.allow_other and o.ro and o.no_metadata
    assert o.attr_timeout == 0.5
    assert o.cache_size == 64 * MiB
    assert o.max_requests == 8


def test_defaults_are_short_ttls_not_pyfuse3s() -> None:
    o = Options()
    for name in ("attr_timeout", "entry_timeout", "negative_timeout", "dir_cache_ttl"):
        assert 0 < getattr(o, name) <= 60, name


def test_mount8_options_are_ignored() -> None:
    assert opts("rw,nodev,nosuid,_netdev,noauto,defaults") == Options()


def test_commas_can_be_escaped() -> None:
    assert split_o(r"fsname=a\,b,ro") == [("fsname", "a,b"), ("ro", None)]


def test_unknown_option_names_it() -> None:
    with pytest.raises(OptionError, match="unknown option 'colour'"):
        opts("colour=blue")


@pytest.mark.parametrize("text", ["secret_key=abc", "password=abc", "aws_secret_access_key=abc"])
def test_secret_options_are_refused(text: str) -> None:
    with pytest.raises(OptionError, match="secrets are not accepted") as e:
        opts(text)
    assert "abc" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("uid=me", "option uid: not a numeric id: 'me'"), ("gid=-3", "option gid: not a valid id: -3"),
     ("uid=4294967295", "not a valid id"), ("attr_timeout=nan", "option attr_timeout: not a number of seconds"),
     ("slow_request=inf", "option slow_request: not a number of seconds"), ("append_delay=-inf", "append_delay"),
     ("attr_timeout=-1", "must not be negative"), ("max_requests=0", "at least 1"),
     ("signature=v3", "must be one of"), ("cache_size", "needs a value"), ("part_size=1M", "part_size"),
     ("endpoint=ftp://x", "not an http"), ("log_level=loud", "log_level")],
)
def test_bad_values_say_which_option(text: str, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        opts(text)


def test_config_file_is_merged_under_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "zosfs.conf"
    config.write_text("# defaults for this host\nendpoint = http://conf:1\numask=077\n\nattr_timeout=9  # slow\nro\n")
    o = build(split_o(f"config={config},endpoint=http://cli:2"))
    assert o.endpoint == "http://cli:2"  # the command line wins
    assert o.umask == 0o077  # the file fills in the rest
    assert o.attr_timeout == 9.0
    assert o.ro
    o = build(split_o(f"umask=002,config={config}"))  # order on the command line does not matter
    assert o.umask == 0o002


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="cannot read config file"):
        opts(f"config={tmp_path / 'missing'}")
    bad = tmp_path / "bad.conf"
    bad.write_text("secret_key=x\n")
    with pytest.raises(OptionError, match="secrets"):
        opts(f"config={bad}")


def test_defaults_resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    o = Options().with_defaults_resolved()
    assert o.uid >= 0 and o.gid >= 0
    assert o.cache_dir == str(tmp_path / "zosfs")
    assert o.staging_dir == str(tmp_path / "zosfs" / "staging")
    given = dataclasses.replace(Options(), uid=7, cache_dir="/c").with_defaults_resolved()
    assert (given.uid, given.cache_dir, given.staging_dir) == (7, "/c", "/c/staging")


def test_every_option_is_documented() -> None:
    for name, field in FIELDS.items():
        assert field.metadata["help"].strip(), name


def test_bad_option_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["bucket", str(tmp_path), "-o", "endpoint=http://127.0.0.1:1,colour=blue"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "colour" in err and err.startswith("zosfs: ")
    assert not any(tmp_path.iterdir())


def test_relative_paths_are_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A background daemon runs in /, so a relative path given on the command
    line must keep meaning what it meant where the command was typed."""
    monkeypatch.chdir(tmp_path)
    o = opts("cache_dir=c,log_file=logs/z.log").with_defaults_resolved()
    assert (o.cache_dir, o.staging_dir, o.log_file) == (str(tmp_path / "c"), str(tmp_path / "c" / "staging"), str(tmp_path / "logs" / "z.log"))


def test_help_lists_every_option_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "|" not in out and "`" not in out, "--help is for a terminal, not Markdown"
    listed = [line.split()[0].split("=")[0] for line in out.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert listed == list(FIELDS)
    assert "  connect_timeout=...  (default: 10.0)" in out.splitlines()
    assert "  ro  (default: off)" in out.splitlines()
    assert all(len(line) <= 80 for line in out.splitlines())


def test_ids_and_seconds_that_parse() -> None:
    o = opts("uid=0,gid=4294967294,attr_timeout=0.5,slow_request=0")
    assert (o.uid, o.gid, o.attr_timeout, o.slow_request) == (0, 4294967294, 0.5, 0.0)
