"""Keys below a directory that cannot be names (`a//b`, `.`/`..` segments,
segments over 255 bytes, a file hidden by a directory of its name): what
`rmdir` does about them.

They are never shown, so `rm -rf` cannot remove them; zosfs never deletes
what it did not show unless `-o hidden_keys=delete` says so, and otherwise
names each one in the log line that explains the ENOTEMPTY.
"""

from __future__ import annotations

import logging
import shlex
from typing import TYPE_CHECKING

from zosfs.namespace import names

if TYPE_CHECKING:
    from zosfs.zos import ZosClient

log = logging.getLogger("zosfs.namespace.changes")  # (the lines users grep for kept their logger name)


async def delete_hidden(zos: ZosClient, prefix: str) -> bool:
    """With `hidden_keys=delete`: delete the keys below `prefix` if every
    one of them cannot be a name (at most one page of them), naming each
    in the log; True if the directory is empty now. A key that is, or may
    become, a name (a file hidden by its directory's name, one another
    client just wrote) is never deleted unseen: False, and ENOTEMPTY."""
    page = await zos.list(prefix, None, max_keys=1000)
    below = [e.key for e in page.entries if e.key != prefix]
    reasons = [names.hidden_reason(key, prefix, below) for key in below]
    if page.next_token is not None or not all(r and r != names.SHADOWED for r in reasons):
        return False
    failures = await zos.delete_many(below)
    failed = {f.key for f in failures}
    for key, reason in zip(below, reasons):
        if key not in failed:
            log.warning("rmdir %r: deleted %r, a key that cannot be a name (%s; hidden_keys=delete)",
                        prefix, key, reason)
    for f in failures:
        log.error("rmdir %r: could not delete %r, a key that cannot be a name: %s (%s); it is kept",
                  prefix, f.key, f.message, f.code)
    return not failures


async def explain_not_empty(zos: ZosClient, prefix: str, looked_empty: bool) -> None:
    """Log why a directory that may look empty is not: keys below it that
    cannot be names (`a//b`, `.`/`..` segments, segments over 255 bytes,
    a file hidden by a directory of its name) are never shown, so `rm -rf`
    cannot remove them and would otherwise fail with no reason given.
    They are kept (zosfs never deletes what it could not show); the line
    names each, as S3 holds it. A plain ENOTEMPTY (every key below is a
    name, and the directory did not look empty here) logs nothing."""
    page = await zos.list(prefix, None, max_keys=names.EXPLAIN_KEYS + 1)
    below = [e.key for e in page.entries if e.key != prefix]
    reasons = [names.hidden_reason(key, prefix, below) for key in below]
    if not any(reasons) and not (looked_empty and below):
        return
    shown = [f"{key!r} ({reason or 'a name, not in the listing this mount showed'})"
             for key, reason in zip(below[: names.EXPLAIN_KEYS], reasons)]
    more = " and more" if len(below) > names.EXPLAIN_KEYS or page.next_token is not None else ""
    log.warning(
        "rmdir %r: not empty: it holds keys this mount does not show, which rm -r therefore cannot "
        "remove (they are kept): %s%s. Keys that cannot be names: delete or rename them with an S3 tool "
        "(keys are quoted as Python literals here), then remove the directory again, or mount with "
        "-o hidden_keys=delete to let rmdir delete them; to delete the directory with everything "
        "below it: aws s3 rm --recursive %s",
        prefix, ", ".join(shown), more, shlex.quote(f"s3://{zos.bucket}/{prefix}"),
    )
