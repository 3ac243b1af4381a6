"""ZOS image processing: the `x-zos-process` parameter, as the SDK manual
defines it, and the GET that carries it.

The manual (section "Get请求获取图片", parameter ZosProcess) extends GetObject
with `x-zos-process=image/OP,ARGS[/OP,ARGS...]` in the query string
(`hudie.jpg?x-zos-process=image/resize,p_30/rotate,180`). The operations:

- `resize,w_W,h_H,m_MODE,color_RRGGBB,p_PERCENT,limit_0|1`
- `crop,w_W,h_H,x_X,y_Y,g_GRAVITY`
- `rotate,DEGREES`
- `watermark,image_B64|text_B64,t_,x_,y_,color_,size_,type_,rotate_,g_`
- `format,jpg|png|webp|bmp|tiff`
- `info`

A file name cannot hold '/', so in a path (the image view's directory name,
`zosfs.namespace.imageview`) the operations are separated by '%2F', the
separator as it travels URL-encoded: `resize,p_30%2Frotate,180`.
"""

from __future__ import annotations

import re

from zosfs.zos.objects import ObjectRequests

PARAM = "x-zos-process"
SEPARATOR = "%2F"  # '/' between operations, in a file name

GRAVITIES = frozenset({"nw", "north", "ne", "west", "center", "east", "sw", "south", "se"})
FORMATS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "tiff"})
RESIZE_MODES = frozenset({"lfit", "mfit", "fill", "pad", "fixed"})
_COLOR = re.compile(r"[0-9A-Fa-f]{6}")
_B64 = re.compile(r"[A-Za-z0-9+_=\-]+")  # the manual's base64 with '/' written '_'


class SpecError(ValueError):
    """A processing spec the manual does not define; the message says why."""


def _int_in(low: int, high: int) -> object:
    def check(value: str) -> bool:
        return value.isdigit() and low <= int(value) <= high
    return check


# Per operation: its named arguments and a check of each value.
_ARGS: dict[str, dict[str, object]] = {
    "resize": {"w": _int_in(1, 4096), "h": _int_in(1, 4096), "m": RESIZE_MODES.__contains__,
               "color": _COLOR.fullmatch, "p": _int_in(1, 1000), "limit": {"0", "1"}.__contains__},
    "crop": {"w": _int_in(0, 1 << 30), "h": _int_in(0, 1 << 30), "x": _int_in(0, 1 << 30),
             "y": _int_in(0, 1 << 30), "g": GRAVITIES.__contains__},
    "watermark": {"t": _int_in(0, 100), "x": _int_in(0, 4096), "y": _int_in(0, 4096), "text": _B64.fullmatch,
                  "color": _COLOR.fullmatch, "size": _int_in(1, 1000), "type": re.compile(r"\w+").fullmatch,
                  "rotate": _int_in(0, 360), "image": _B64.fullmatch, "g": GRAVITIES.__contains__},
}


def _check_operation(op: str) -> None:
    name, _, rest = op.partition(",")
    args = rest.split(",") if rest else []
    if name == "info":
        if args:
            raise SpecError("info takes no arguments")
    elif name == "rotate":
        if len(args) != 1 or not _int_in(0, 360)(args[0]):  # type: ignore[operator]
            raise SpecError("rotate takes one angle in [0, 360]: rotate,90")
    elif name == "format":
        if len(args) != 1 or args[0].lower() not in FORMATS:
            raise SpecError(f"format takes one of {', '.join(sorted(FORMATS))}: format,png")
    elif name in _ARGS:
        allowed = _ARGS[name]
        if not args:
            raise SpecError(f"{name} needs arguments, e.g. {name},w_100")
        for arg in args:
            key, sep, value = arg.partition("_")
            check = allowed.get(key)
            if not sep or check is None:
                raise SpecError(f"{name} has no argument {key!r} (it takes {', '.join(allowed)})")
            if not check(value):  # type: ignore[operator]
                raise SpecError(f"{name}: {key}_{value} is out of range")
        if name == "watermark" and not any(a.startswith(("text_", "image_")) for a in args):
            raise SpecError("watermark needs text_ or image_")
    else:
        raise SpecError(f"unknown operation {name!r} (resize, crop, rotate, watermark, format, info)")


def process_param(spec: str) -> str:
    """The `x-zos-process` value for a spec as written in a path:
    'resize,w_200' -> 'image/resize,w_200'; operations separated by '%2F'
    (or, where a path is not involved, '/'). Raises SpecError."""
    text = spec.replace(SEPARATOR, "/").replace(SEPARATOR.lower(), "/")
    if text.startswith("image/"):
        text = text[len("image/"):]
    ops = text.split("/")
    if not text or any(not op for op in ops):
        raise SpecError(f"empty operation in {spec!r}")
    for op in ops:
        _check_operation(op)
    return "image/" + "/".join(ops)


class ProcessRequests(ObjectRequests):
    """GET of an object through ZOS's image processing."""

    async def get_processed_object(self, key: str, process: str) -> tuple[bytes, str | None]:
        """The whole processed object and its Content-Type (a server without
        image processing sends the object unchanged). The parameter goes in
        the query string, so that it is signed with the request."""
        resp = await self._request("GetObject", "GET", key, query={PARAM: process})
        return bytes(resp.body), resp.headers.get("content-type")
