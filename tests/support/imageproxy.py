"""A stand-in for ZOS's image processing, in front of the local RGW (tests only).

RGW knows nothing of `x-zos-process`. This proxy forwards every request to
RGW byte for byte (method, target, headers with Host, body), so that the
SigV4 signature zosfs made still holds, and RGW, which ignores the unknown
query parameter, answers with the source object. When the request carried
`x-zos-process=image/...` and RGW answered 200, the proxy processes the body
with Pillow as the ZOS SDK manual describes: `resize` (w, h, m=lfit|fixed, p),
`crop` (w, h, x, y from the top left), `rotate` (clockwise degrees),
`format` (jpg, png, webp, bmp, tiff) and `info` (JSON). Anything else is
refused with 400, as a server would refuse a spec it does not know.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from PIL import Image

FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp", "TIFF": "image/tiff"}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class ProcessError(ValueError):
    pass


def _args(rest: list[str]) -> dict[str, str]:
    out = {}
    for arg in rest:
        key, sep, value = arg.partition("_")
        if not sep:
            raise ProcessError(f"bad argument {arg!r}")
        out[key] = value
    return out


def process(data: bytes, spec: str) -> tuple[bytes, str]:
    """Apply an `x-zos-process` value to image bytes: (result, content type)."""
    if not spec.startswith("image/"):
        raise ProcessError(f"not an image process: {spec!r}")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:
        raise ProcessError(f"not an image: {err}") from None
    fmt = img.format or "PNG"
    for op in spec[len("image/"):].split("/"):
        name, *rest = op.split(",")
        if name == "info":
            info = {"FileSize": len(data), "Format": fmt.lower(), "ImageWidth": img.width, "ImageHeight": img.height}
            return json.dumps(info).encode(), "application/json"
        if name == "resize":
            a = _args(rest)
            if "p" in a:
                w, h = max(1, img.width * int(a["p"]) // 100), max(1, img.height * int(a["p"]) // 100)
            elif a.get("m") == "fixed":
                w, h = int(a.get("w", img.width)), int(a.get("h", img.height))
            else:  # lfit: the largest image inside w x h, proportions kept
                scale = min(int(a["w"]) / img.width if "w" in a else float("inf"),
                            int(a["h"]) / img.height if "h" in a else float("inf"))
                w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
            img = img.resize((w, h))
        elif name == "crop":
            a = _args(rest)
            x, y = int(a.get("x", 0)), int(a.get("y", 0))
            w, h = int(a.get("w", img.width - x)), int(a.get("h", img.height - y))
            img = img.crop((x, y, min(x + w, img.width), min(y + h, img.height)))
        elif name == "rotate":
            img = img.rotate(-int(rest[0]), expand=True)
        elif name == "format":
            fmt = FORMATS.get(rest[0].lower()) if rest else None
            if fmt is None:
                raise ProcessError(f"unknown format {rest!r}")
        else:
            raise ProcessError(f"operation {name!r} not implemented by the stand-in")
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue(), MIME[fmt]


class ImageProxy:
    """`with ImageProxy(rgw.endpoint) as p:` mount against `p.endpoint`."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.processed: list[tuple[str, str]] = []  # (path, x-zos-process) of every processed GET
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        conn.putheader(name, value)
                    conn.endheaders(body)
                    answer = conn.getresponse()
                    data = answer.read()
                    status, headers = answer.status, answer.getheaders()
                finally:
                    conn.close()
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                spec = query.get("x-zos-process", [None])[0]
                if spec and self.command == "GET" and status == 200:
                    try:
                        data, ctype = process(data, spec)
                    except ProcessError as err:
                        status, data, ctype = 400, _error("InvalidArgument", str(err)), "application/xml"
                    headers = [(n, v) for n, v in headers if n.lower() not in ("content-type", "content-length")]
                    headers.append(("Content-Type", ctype))
                    with proxy.lock:
                        proxy.processed.append((urllib.parse.urlsplit(self.path).path, spec))
                self.send_response_only(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and not (name.lower() == "content-length" and self.command != "HEAD"):
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ImageProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.server.shutdown()
        self.server.server_close()


def _error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
