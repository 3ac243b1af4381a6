"""Mount options: one frozen object, declared once.

Every `-o` option is one field of `Options` with its default and meaning. The
same declaration parses `-o` strings and config files, checks values, and
generates the README's option table (`python -m zosfs.options`), so the three
cannot drift apart. Nothing else in zosfs reads the environment or argv for
configuration: the daemon builds one `Options` and passes it down.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

KiB, MiB, GiB = 1024, 1024**2, 1024**3
# The smallest workable staging budget: one write request of the kernel (FUSE
# sends at most 1 MiB). A change larger than the budget goes out piecewise:
# a part is filled from the object and uploaded as often as the budget fills
# (replace.py), so neither part_size nor rewrite_threshold bound it from below.
MIN_STAGING = 1 * MiB


class OptionError(ValueError):
    """A bad option; its message is one line meant for the user."""


def parse_size(text: str) -> int:
    """'64M' -> 67108864. Suffixes K, M, G, T (powers of 1024), optional 'iB'/'B'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 512K, 8M, 2G)")
    factor = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024**4}[m.group(2).lower()]
    return int(float(m.group(1)) * factor)


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("", "1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


def _number(text: str, convert: Callable[[str], Any], what: str) -> Any:
    """`convert(text)`, or ValueError naming what was expected."""
    try:
        return convert(text)
    except ValueError:
        raise ValueError(f"not {what}: {text!r}") from None


def parse_octal(text: str) -> int:
    return int(_number(text, lambda t: int(t, 8), "an octal mode"))


def parse_seconds(text: str) -> float:
    value = float(_number(text, float, "a number of seconds"))
    if not math.isfinite(value):  # (nan would pass every comparison below; inf overflows timeouts)
        raise ValueError(f"not a number of seconds: {text!r}")
    if value < 0:
        raise ValueError("must not be negative")
    return value


def parse_int(text: str) -> int:
    return int(_number(text, int, "a whole number"))


def parse_id(text: str) -> int:
    """A user or group id: 0 to 4294967294 (-1 is "unset" in 32 bits)."""
    value = int(_number(text, int, "a numeric id"))
    if not 0 <= value < 2**32 - 1:
        raise ValueError(f"not a valid id: {value} (0 to {2**32 - 2})")
    return value


def parse_positive_int(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90s', '30m', '12h', '7d' or plain seconds -> seconds (at least 1)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"not a duration: {text!r} (examples: 3600, 90s, 30m, 12h, 7d)")
    return int(m.group(1)) * DURATION_UNITS[m.group(2)]


def parse_url_expiry(text: str) -> int:
    seconds = parse_duration(text)
    if seconds > 7 * 86400:
        raise ValueError("must be at most 7d (the longest a SigV4 presigned URL may live)")
    return seconds


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def opt(default: Any, help: str, parse: Callable[[str], Any] | None = None, shown: str = "") -> Any:
    """Declare one option: its default, its meaning, and (when the field's type
    alone does not say) how to parse it."""
    return dataclasses.field(default=default, metadata={"help": help, "parse": parse, "shown": shown})


_PARSE_BY_TYPE: dict[str, Callable[[str], Any]] = {"str": str, "bool": parse_bool, "int": parse_int, "float": parse_seconds}


@dataclass(frozen=True)
class Options:
    """All settings of one mount. Built once; never changed afterwards.

    Each field is one `-o` option; its metadata is the README's documentation.
    """

    # Where and who
    endpoint: str = opt("", "URL of the ZOS endpoint, e.g. `https://region.zos.ctyun.cn`.", shown="(required)")
    region: str = opt("us-east-1", "Region used in request signatures.")
    signature: str = opt("v4", "Request signature version: `v4` or `v2`.", parse_choice("v4", "v2"))
    credentials: str = opt("", "File with `ACCESS_KEY:SECRET_KEY` (s3fs passwd format) or an AWS shared-credentials file; refused if group or others can read it.", shown="see Credentials")
    profile: str = opt("", "Profile to use from an AWS shared-credentials file.", shown="`default`")
    access_key: str = opt("", "Access key id (secrets are never accepted as options; see Credentials).")
    no_verify_ssl: bool = opt(False, "Do not verify the endpoint's TLS certificate.")
    # Mount
    allow_other: bool = opt(False, "Let users other than the one who mounted use the mount.")
    ro: bool = opt(False, "Mount read-only.")
    uid: int = opt(-1, "Owner of objects that carry no uid metadata.", parse_id, "mounting user")
    gid: int = opt(-1, "Group of objects that carry no gid metadata.", parse_id, "mounting group")
    umask: int | None = opt(None, "Umask for objects that carry no mode metadata (files 0666, dirs 0777 before it); not given: files 0644, directories 0750 (as s3fs shows them), the mount's root 0755.", parse_octal, "none")
    compat_dir: bool = opt(False, "Also find an empty directory marked only by `dir_$folder$` when its name is looked up in a directory not listed yet (one more HEAD per such lookup, as s3fs's `compat_dir`); listings show such directories without it.")
    no_metadata: bool = opt(False, "Never read per-object metadata: modes, owners and times come from the defaults and LastModified (fast listings for plain data buckets).")
    meta_index: bool = opt(True, "Keep a metadata index per large directory in the bucket (under `.zosfs/index/`) and read it, so that a first mount on any host lists such a directory with one LIST and one GET instead of a HEAD per file (see Listing); `off`: neither read nor write it.", shown="on")
    hidden_keys: str = opt("keep", "Keys that cannot be names (`a//b`, `.` or `..` segments, segments over 255 bytes) are never shown. `keep`: `rmdir` (and so `rm -rf`) of a directory holding them fails with ENOTEMPTY and a log line naming each; `delete`: `rmdir` deletes them when they are all that is left below the directory (at most 1,000), naming each in the log (see Semantics: Names).", parse_choice("keep", "delete"))
    fsname: str = opt("", "Source name shown by `mount` and `df`.", shown="`zosfs:BUCKET`")
    # Caching of names and attributes
    attr_timeout: float = opt(5.0, "Seconds the kernel and zosfs may reuse file attributes.")
    entry_timeout: float = opt(5.0, "Seconds a name lookup may be reused.")
    open_revalidate: str = opt("always", "`always`: every `open()` checks the object's ETag with the server (one request, which also fetches a small file's first block), so it reads the latest closed version; `ttl`: only when its attributes are older than `attr_timeout` (fewer requests, may read a version up to that old).", parse_choice("always", "ttl"))
    negative_timeout: float = opt(1.0, "Seconds a failed lookup (no such file) may be reused, by zosfs and the kernel; then the server is asked again, even while the directory's listing is cached.")
    dir_cache_ttl: float = opt(5.0, "Seconds a directory listing may be reused.")
    change_feed: bool = opt(True, "Tell other zosfs mounts of this bucket about this mount's changes, and follow theirs, through an appendable object under `.zosfs/feed/` (see Change feed), so that they show within about a second; off, or where append is unavailable (versioned or object-lock buckets): the timers above.", shown="`on`")
    feed_poll_max: float = opt(1.0, "Seconds between polls of the change feed once it is idle (the longest wait for another mount's change); raise it for fleets of hundreds of mounts.")
    feed_shards: int = opt(1, "Change feed objects per bucket: a mount of a prefix polls the one of its prefix's first path segment, a mount of the whole bucket all of them. All mounts of a bucket must agree.", parse_positive_int)
    cache_dir: str = opt("", "Directory for the persistent metadata cache (and, by default, staging).", shown="`~/.cache/zosfs`")
    # Reading
    cache_size: int = opt(64 * MiB, "Memory budget of the block cache (blocks held and blocks in flight; the disk cache holds more).", parse_size, "64M")
    block_size: int = opt(8 * MiB, "Size of a cached block (one ranged GET).", parse_size, "8M")
    readahead: int = opt(64 * MiB, "Largest prefetch window of a sequential reader.", parse_size, "64M")
    disk_cache: str = opt("", "Directory of the persistent block cache on disk (behind the memory cache; one subdirectory per mounted source).", shown="`CACHE_DIR/blocks`")
    disk_cache_size: int = opt(-1, "Hard cap of the disk block cache; `0` turns it off.", parse_size, "10% of the free space, at most 16G")
    cache_writes: int = opt(64 * MiB, "What this mount uploads is copied into the block cache (so that reading it back costs no GET) for the first SIZE bytes of each file; `0`: never. Beyond it a large write is not copied: copying cost a 1 GiB sequential write about 15% of its speed on two cores.", parse_size, "64M")
    prefetch_whole: int = opt(0, "Files up to this size are fetched whole (into the caches) on their first read; `0`: off.", parse_size, "`0`")
    # Writing
    staging_dir: str = opt("", "Directory for data not yet uploaded.", shown="`CACHE_DIR/staging`")
    staging_size: int = opt(4 * GiB, "Budget of not-yet-uploaded data; a writer waits while it is full and uploads that free it are under way (at most write_deadline), and gets ENOSPC when nothing can free it. At least 1M.", parse_size, "4G")
    append_chunk: int = opt(4 * MiB, "A new or appendable file is sent by append upload whenever this much new data has arrived.", parse_size, "4M")
    append_delay: float = opt(5.0, "Data written slowly to a new or appendable file (a log) is appended at most this many seconds after it arrives, even if less than append_chunk (after the file has been open a long time, at most every 0.1% of that time); 0: only whole chunks, fsync and close.")
    whole_put: int = opt(4 * MiB, "A new file closed before any of it was appended (up to this size and append_chunk) is stored by one PUT, as a Normal object: RGW does about two thirds of the work of an append that creates the object, which sets the pace of copying small files; the first `>>` makes it appendable. `0`: every new file is created by append upload (an appendable object, for ZOS clients that append to what zosfs writes).", parse_size, "4M")
    multipart_threshold: int = opt(256 * MiB, "New files are streamed by append upload; one that grows past this size while written faster than 32 MiB/s goes on by parallel multipart upload (slower writers, and appendable objects that existed before, stay appendable).", parse_size, "256M")
    rewrite_threshold: int = opt(16 * MiB, "A changed file up to this size is re-uploaded whole; a larger one is rebuilt by multipart upload that copies unchanged parts on the server.", parse_size, "16M")
    part_size: int = opt(8 * MiB, "Size of a multipart upload part (at least 5M).", parse_size, "8M")
    upload_concurrency: int = opt(8, "Parts uploaded at once per file.", parse_positive_int)
    max_requests: int = opt(32, "Requests in flight at once (threads and connections).", parse_positive_int)
    write_deadline: float = opt(120.0, "Seconds a close, fsync or write may wait for the server (all retries included) before it fails (EIO; the data stays in staging and the log names it).")
    flush_timeout: float = opt(600.0, "On unmount or SIGTERM, seconds to wait for uploads before leaving the rest in staging.")
    # ZOS features (README: Share links, Storage classes, Versions view, Image view)
    storage_class: str = opt("STANDARD", "Storage class of new objects: `STANDARD`, `STANDARD_IA` or `GLACIER` (change one object's with `setfattr -n user.zos.storage_class`).", parse_choice("STANDARD", "STANDARD_IA", "GLACIER"))
    url_expiry: int = opt(86400, "How long a share link (`user.zos.url`) or upload form (`user.zos.upload_form`) stays valid: seconds or `30m`, `12h`, `7d` (at most 7 days).", parse_url_expiry, "`1d`")
    versions_view: str = opt("hidden", "The read-only versions view `.zos-versions/` at the mount root (buckets with versioning enabled or suspended): `hidden` (reachable by name, not listed in the root, so `find` and `rsync` of the mount skip it), `shown` (listed too) or `off` (the name is an ordinary one).", parse_choice("hidden", "shown", "off"))
    image_view: str = opt("hidden", "The read-only image view `.zos-process/SPEC/` at the mount root (ZOS image processing, `x-zos-process`): `hidden`, `shown` or `off`, as `versions_view`.", parse_choice("hidden", "shown", "off"))
    # Object lock
    bypass_governance: bool = opt(False, "Let the mount's owner shorten or remove GOVERNANCE retention.")
    # Service details
    append_header: str = opt("x-rgw-next-append-position", "Response header that carries the next append position.")
    list_api: str = opt("auto", "ListObjects version: `v2`, `v1` (marker paging, the one the ZOS SDK manual documents), or `auto`: V2 unless the endpoint shows at mount, or in any answer, that it does not honour it.", parse_choice("auto", "v1", "v2"))
    connect_timeout: float = opt(10.0, "Seconds to wait for a connection (TLS handshake included), and at mount time for the bucket's first answer.")
    read_timeout: float = opt(60.0, "Seconds to wait for an answer, or for the server to take more of a request body, before the request fails or is retried.")
    retries: int = opt(5, "Attempts per idempotent request (with backoff and jitter).", parse_positive_int)
    # Logging
    log_level: str = opt("info", "Log level: debug, info, warning, error.", parse_choice("debug", "info", "warning", "error"))
    slow_request: float = opt(30.0, "A FUSE request still running after this many seconds is logged as a warning, once, with where it waits (as `kill -USR1` shows it), and its end too; 0: never.")
    log_file: str = opt("", "Log to this file instead of stderr (foreground) or syslog (background; without a syslog socket, `CACHE_DIR/log/BUCKET-HASH.log`, rotated at 4 MiB).")
    config: str = opt("", "Read further `name=value` options from this file (one per line, `#` comments).")

    def with_defaults_resolved(self) -> Options:
        """Fill in defaults that depend on who runs the mount."""
        changes: dict[str, Any] = {}
        if self.uid < 0:
            changes["uid"] = os.getuid()
        if self.gid < 0:
            changes["gid"] = os.getgid()
        if not self.cache_dir:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            changes["cache_dir"] = os.path.join(base, "zosfs")
        if not self.disk_cache:
            changes["disk_cache"] = os.path.join(changes.get("cache_dir", self.cache_dir), "blocks")
        if not self.staging_dir:
            changes["staging_dir"] = os.path.join(changes.get("cache_dir", self.cache_dir), "staging")
        # A background daemon runs in "/": relative paths must not change meaning.
        for name in ("cache_dir", "staging_dir", "log_file"):
            value = changes.get(name, getattr(self, name))
            if value and not os.path.isabs(value):
                changes[name] = os.path.abspath(value)
        return dataclasses.replace(self, **changes)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Options)}
# Options that mount(8) and fstab pass along and that mean nothing to zosfs.
IGNORED = {"rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "auto", "noauto", "user", "nouser",
           "users", "_netdev", "nofail", "defaults", "atime", "noatime", "relatime", "async",
           "default_permissions"}
SECRET_NAMES = {"secret_key", "secret", "secret_access_key", "aws_secret_access_key", "password", "passwd"}


def split_o(text: str) -> list[tuple[str, str | None]]:
    """'a=1,b,c=x' -> [('a','1'), ('b',None), ('c','x')]. Commas may be escaped as '\\,'."""
    items = []
    for part in re.split(r"(?<!\\),", text):
        part = part.replace("\\,", ",").strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        items.append((name.strip(), value if eq else None))
    return items


def read_config_file(path: str) -> list[tuple[str, str | None]]:
    """`name=value` lines; blank lines and `#` comments ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise OptionError(f"cannot read config file {path}: {err.strerror}") from None
    items = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, eq, value = line.partition("=")
            items.append((name.strip(), value.strip() if eq else None))
    return items


def build(items: Iterable[tuple[str, str | None]]) -> Options:
    """Check and convert options. A config= file is read first, so that
    options given on the command line win over it."""
    items = list(items)
    config_files = [v for n, v in items if n == "config" and v]
    merged = [item for path in config_files for item in read_config_file(path)] + items
    values: dict[str, Any] = {}
    for name, raw in merged:
        if name in IGNORED:
            continue
        if name in SECRET_NAMES:
            raise OptionError(
                f"option {name!r}: secrets are not accepted as options (they would show in `ps`); "
                "use credentials=FILE or the environment"
            )
        field = FIELDS.get(name)
        if field is None:
            raise OptionError(f"unknown option {name!r} (see `zosfs --help`)")
        parse = parser(field)
        if raw is None and parse is not parse_bool:
            raise OptionError(f"option {name!r} needs a value: {name}=...")
        try:
            values[name] = parse(raw if raw is not None else "")
        except ValueError as err:
            raise OptionError(f"option {name}: {err}") from None
    opts = Options(**values)
    check(opts)
    return opts


def check(opts: Options) -> None:
    """Relations between options that a single parser cannot see."""
    if opts.part_size < 5 * MiB:
        raise OptionError("option part_size: must be at least 5M (the multipart minimum)")
    if opts.part_size > 5 * GiB:
        raise OptionError("option part_size: must be at most 5G")
    if opts.block_size < 64 * KiB:
        raise OptionError("option block_size: must be at least 64K")
    if opts.cache_size < 2 * opts.block_size:
        raise OptionError("option cache_size: must hold at least two blocks")
    if opts.append_chunk < 1:
        raise OptionError("option append_chunk: must be positive")
    if opts.rewrite_threshold < opts.part_size:
        raise OptionError("option rewrite_threshold: must be at least part_size")
    if opts.staging_size < MIN_STAGING:
        raise OptionError(f"option staging_size: must be at least {MIN_STAGING // MiB}M (the largest single write the "
                          "kernel sends); changes larger than the budget go out piecewise, each part up to "
                          "part_size/staging_size times")
    if opts.write_deadline <= 0:
        raise OptionError("option write_deadline: must be positive")
    if opts.endpoint and not re.match(r"^https?://[^/\s]+", opts.endpoint):
        raise OptionError(f"option endpoint: not an http(s) URL: {opts.endpoint!r}")


def parser(field: dataclasses.Field) -> Callable[[str], Any]:
    return field.metadata["parse"] or _PARSE_BY_TYPE[str(field.type)]


def _default_shown(f: dataclasses.Field) -> str:
    if f.metadata["shown"]:
        return f.metadata["shown"]
    if parser(f) is parse_bool:
        return "off"
    return f"`{f.default}`" if f.default != "" else "(none)"


def markdown_table() -> str:
    """The README's option table."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for f in FIELDS.values():
        rows.append(f"| `{f.name}` | {_default_shown(f)} | {f.metadata['help']} |")
    return "\n".join(rows)


def plain_text(width: int = 79) -> str:
    """The same as `markdown_table`, for a terminal (`zosfs --help`): each
    option with its default, then its meaning indented below it."""
    import textwrap

    lines = []
    for f in FIELDS.values():
        flag = parser(f) is parse_bool
        default = _default_shown(f).replace("`", "")
        default = default if default == "(required)" else f"(default: {default.strip('()')})"
        lines.append(f"  {f.name}{'' if flag else '=...'}  {default}")
        lines += textwrap.wrap(f.metadata["help"].replace("`", ""), width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
