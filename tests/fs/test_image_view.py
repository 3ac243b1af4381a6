"""The image view (issue 22, point 6): `.zos-process/SPEC/PATH` on a real
mount. RGW cannot process images, so the mount goes through the stand-in
(tests/support/imageproxy.py), which forwards every request to RGW as zosfs
signed it and processes the answers of GETs with `x-zos-process`."""

from __future__ import annotations

import errno
import io
import json
import os
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.fs.test_zos_features import run_check
from tests.support.imageproxy import ImageProxy
from tests.support.mount import ZosfsMount
from tests.support.rgw import LocalRGW

VIEW = ".zos-process"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.fixture
def images(rgw: LocalRGW) -> Iterator[ImageProxy]:
    with ImageProxy(rgw.endpoint) as p:
        yield p


def os_error(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def test_processed_images_are_files(make_mount, bucket: str, s3, images: ImageProxy) -> None:
    s3.put_object(Bucket=bucket, Key="photos/cat.png", Body=png(40, 20))
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"not an image")
    m: ZosfsMount = make_mount(bucket, endpoint=images.endpoint)
    assert sorted(os.listdir(m.path)) == ["notes.txt", "photos"]  # the view is not listed
    assert (m.path / "photos" / "cat.png").read_bytes() == png(40, 20)  # the rest goes through untouched

    resized = m.path / VIEW / "resize,w_20" / "photos" / "cat.png"
    assert sorted(os.listdir(m.path / VIEW / "resize,w_20")) == ["notes.txt", "photos"]
    assert os.listdir(resized.parent) == ["cat.png"]
    data = resized.read_bytes()
    assert os.stat(resized).st_size == len(data)  # the size is the processed result's
    assert opened(data).size == (20, 10)
    assert images.processed[-1] == (f"/{bucket}/photos/cat.png", "image/resize,w_20")

    assert opened((m.path / VIEW / "rotate,90" / "photos" / "cat.png").read_bytes()).size == (20, 40)
    assert opened((m.path / VIEW / "crop,w_10,h_5,x_2,y_3" / "photos" / "cat.png").read_bytes()).size == (10, 5)
    jpg = (m.path / VIEW / "format,jpg" / "photos" / "cat.png").read_bytes()
    assert jpg[:2] == b"\xff\xd8" and opened(jpg).format == "JPEG"
    info = json.loads((m.path / VIEW / "info" / "photos" / "cat.png").read_bytes())
    assert (info["ImageWidth"], info["ImageHeight"]) == (40, 20)
    chained = m.path / VIEW / "resize,w_20%2Frotate,90" / "photos" / "cat.png"
    assert opened(chained.read_bytes()).size == (10, 20)
    assert images.processed[-1][1] == "image/resize,w_20/rotate,90"

    # A spec the manual does not define is refused; a file that is not an
    # image cannot be processed (the server's 400 becomes an error, not bytes).
    assert os_error(os.stat, m.path / VIEW / "blur,3") == errno.EINVAL
    assert os_error((m.path / VIEW / "info" / "notes.txt").read_bytes) in (errno.EINVAL, errno.EIO)
    assert os_error(os.stat, m.path / VIEW / "info" / "missing.png") == errno.ENOENT


def test_results_are_cached_per_version_of_the_source(make_mount, bucket: str, s3, images: ImageProxy) -> None:
    s3.put_object(Bucket=bucket, Key="cat.png", Body=png(40, 20))
    m: ZosfsMount = make_mount(bucket, endpoint=images.endpoint, options={"attr_timeout": "1"})
    half = m.path / VIEW / "resize,p_50" / "cat.png"
    first = half.read_bytes()
    assert half.read_bytes() == first and os.stat(half).st_size == len(first)
    assert [p for p in images.processed if p[1] == "image/resize,p_50"] == [(f"/{bucket}/cat.png", "image/resize,p_50")]
    s3.put_object(Bucket=bucket, Key="cat.png", Body=png(80, 60))
    time.sleep(2.5)  # attr_timeout, and the view's own second
    assert opened(half.read_bytes()).size == (40, 30)
    assert os.stat(half).st_size == len(half.read_bytes())
    assert len([p for p in images.processed if p[1] == "image/resize,p_50"]) == 2


def test_the_view_is_read_only_and_can_be_shown(make_mount, bucket: str, s3, images: ImageProxy) -> None:
    s3.put_object(Bucket=bucket, Key="cat.png", Body=png(8, 8))
    m: ZosfsMount = make_mount(bucket, endpoint=images.endpoint, options={"image_view": "shown"})
    assert sorted(os.listdir(m.path)) == [VIEW, "cat.png"]
    assert os.listdir(m.path / VIEW) == []  # specs are looked up, not listed
    target = m.path / VIEW / "info" / "cat.png"
    assert os_error(os.open, target, os.O_WRONLY) in (errno.EROFS, errno.EACCES)
    assert os_error(os.unlink, target) == errno.EROFS
    assert os_error(os.mkdir, m.path / VIEW / "info" / "d") == errno.EROFS
    off: ZosfsMount = make_mount(bucket, endpoint=images.endpoint, options={"image_view": "off"})
    assert not (off.path / VIEW).exists()


def test_check_finds_image_processing(bucket: str, s3, images: ImageProxy) -> None:
    rows, out = run_check(images.endpoint, bucket)
    assert rows["image processing"] == "yes", out
    assert images.processed and images.processed[-1][1] == "image/info"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
