"""Where the mount's log goes, and the filter that keeps secrets out of it.

Kept apart from the lifecycle because the command line sets the log up
before the daemon exists (it must say where a background mount will log
before it detaches), and the tests check the choice on its own.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from zosfs.options import Options
from zosfs.source import Source, state_name


class LogError(Exception):
    """The log cannot be written where it should go; one line for the user."""


class RedactFilter(logging.Filter):
    """Defence in depth: should a secret ever reach a log message, mask it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "***")
                record.msg, record.args = message, None
        return True


SYSLOG_ENV = "ZOSFS_SYSLOG_SOCKET"  # where the syslog socket is; unset: /dev/log
LOG_FILE_SIZE = 4 * 2**20  # a log zosfs writes on its own rotates at this size...
LOG_FILE_BACKUPS = 3  # ...keeping this many older files (16 MiB at most in all)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def syslog_socket() -> str:
    return os.environ.get(SYSLOG_ENV) or "/dev/log"


def log_destination(opts: Options, source: Source, foreground: bool) -> str:
    """Where the mount's log goes: a file path, "stderr", or "syslog".

    A background mount on a machine without a syslog socket (containers,
    minimal VMs) has no stderr either, so it logs to a size-rotated file in
    the cache directory rather than nowhere."""
    if opts.log_file:
        return opts.log_file
    if foreground:
        return "stderr"
    if os.path.exists(syslog_socket()):
        return "syslog"
    return os.path.join(opts.cache_dir, "log", state_name(opts, source) + ".log")


def open_log_file(opts: Options, where: str) -> None:
    """Make sure the log file `where` can be written (creating the default
    file's directory); LogError says why not. The command line calls it
    before a background daemon detaches, whose failures nobody would see."""
    try:
        if where != opts.log_file:
            os.makedirs(os.path.dirname(where), mode=0o700, exist_ok=True)
        with open(where, "a"):
            pass
    except OSError as err:
        hint = "check log_file" if where == opts.log_file else "check cache_dir, or set log_file"
        raise LogError(f"cannot write the log file {where}: {err.strerror or err} ({hint})") from None


def setup_logging(opts: Options, source: Source, foreground: bool, secrets: list[str]) -> str:
    """Send the log to `log_destination` and return it; LogError if it is a
    file that cannot be written."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    where = log_destination(opts, source, foreground)
    handler: logging.Handler
    if where not in ("syslog", "stderr"):
        open_log_file(opts, where)
    if where == "syslog":
        handler = logging.handlers.SysLogHandler(address=syslog_socket(), facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("zosfs[%(process)d]: %(levelname)s %(name)s: %(message)s"))
    elif where == "stderr":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    elif where == opts.log_file:
        handler = logging.FileHandler(where)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    else:
        handler = logging.handlers.RotatingFileHandler(where, maxBytes=LOG_FILE_SIZE, backupCount=LOG_FILE_BACKUPS)
        handler.setFormatter(logging.Formatter("%(asctime)s zosfs[%(process)d] %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter(secrets))
    root.addHandler(handler)
    root.setLevel(opts.log_level.upper())
    # Third-party debug logs carry request details we do not want in logs.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return where
