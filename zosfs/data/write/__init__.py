"""The write path: staging, append upload, multipart, and rebuilds.

Every file with unflushed changes has a `Writer` (writer.py): a sparse
staging file, the ranges of it that differ from the object (`dirty`), the
ranges it holds at all (`local`), and how the object on the server relates
to it (state.py). How data goes out depends on that relation, and the writer
holds it as its `mode`, changed only in `Writer.switch`:

- Append mode (append.py). While the object on the server is exactly the
  first `remote_len` bytes of the file and every change lies beyond them (a
  new file written sequentially, `>>` on an appendable object), new bytes go
  out by append upload as they arrive, in chunks that grow from
  `append_chunk` to 64 MiB (less, once new bytes have waited `append_delay`:
  see `AppendUpload._soon`). Only new bytes ever cross the wire, and a
  growing log can be read by others while it is written. A new file that
  grows past `multipart_threshold` while being written faster than
  STREAMING_RATE leaves append mode (a copy streaming in; a slower writer,
  such as a log, goes on appending, as does an appendable object that
  existed before); what was appended by then is carried over into the
  multipart upload, and each part uploaded from staging is freed there
  (multipart.py), as appended bytes are.
- Replace mode (replace.py: anything else: overwrites, truncation,
  non-appendable objects, buckets without append). The object is replaced
  only when the new content is complete: files up to `rewrite_threshold` by
  one PUT (unchanged bytes downloaded first), larger ones by multipart upload
  in which unchanged parts are copied on the server (upload-part-copy) and
  changed parts are sent from staging (multipart.py). A sequential writer's
  finished parts are uploaded in the background while it writes. (A small
  non-appendable object written through O_APPEND is instead deleted and
  appended anew: `Replace.become_appendable`.)

Every object written carries the file's full metadata, tags and ACL, since
RGW replaces them on each append (see `Namespace.write_options`).

Durability (flush.py): `flush` (close) and `fsync` return only when
everything written so far is stored in the object store, and raise EIO
otherwise; the data then stays in staging, and on release the log names the
file that holds it (registry.py). A failed multipart upload is kept for the
next attempt (fsync or close again) and aborted when the file is released
without success.

Uploads run while the file goes on changing (background appends and parts,
flushes during writes from other threads): each upload notes what changed
while it ran (`Watch`) and keeps that dirty, and never trusts object bytes
beyond a truncation that happened meanwhile.
"""

from zosfs.data.write.append import AppendUpload
from zosfs.data.write.multipart import Multipart, StreamingMultipart, multipart_etag
from zosfs.data.write.registry import WritePath
from zosfs.data.write.replace import Replace
from zosfs.data.write.state import FileState, Watch
from zosfs.data.write.writer import Writer

__all__ = [
    "AppendUpload", "FileState", "Multipart", "Replace", "StreamingMultipart", "Watch", "WritePath", "Writer",
    "multipart_etag",
]
