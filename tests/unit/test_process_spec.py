"""The image view's spec syntax against the ZOS SDK manual's examples, and
the request that carries it (`x-zos-process` in the signed query string)."""

from __future__ import annotations

import pytest

from tests.unit.test_signing import botocore_v4, ours
from zosfs.zos.process import SpecError, process_param
from zosfs.zos.signing import query_string

# Every example the manual gives (section "Post请求处理图片", ZosProcess), as
# written in a path (without "image/") and as sent.
MANUAL = [
    ("resize,w_300,h_200,m_fixed", "image/resize,w_300,h_200,m_fixed"),
    ("crop,w_100,h_100,x_10,y_10,g_se", "image/crop,w_100,h_100,x_10,y_10,g_se"),
    ("rotate,45", "image/rotate,45"),
    ("watermark,image_aHVkaWUuanBnP3gtem9zLXByb2Nlc3M9aW1hZ2UvcmVzaXplLHBfMzAvcm90YXRlLDE4MA==,g_north,t_40",
     "image/watermark,image_aHVkaWUuanBnP3gtem9zLXByb2Nlc3M9aW1hZ2UvcmVzaXplLHBfMzAvcm90YXRlLDE4MA==,g_north,t_40"),
    ("watermark,text_Q2hpbmF0ZWxlY29t,type_heiti,color_FF0000,size_40,g_se,t_80",
     "image/watermark,text_Q2hpbmF0ZWxlY29t,type_heiti,color_FF0000,size_40,g_se,t_80"),
    ("format,png", "image/format,png"),
    ("info", "image/info"),
    ("resize,w_100", "image/resize,w_100"),  # the GetObject example
    ("resize,w_200", "image/resize,w_200"),
    # hudie.jpg?x-zos-process=image/resize,p_30/rotate,180: '/' between operations is '%2F' in a name
    ("resize,p_30%2Frotate,180", "image/resize,p_30/rotate,180"),
    ("resize,p_30%2frotate,180", "image/resize,p_30/rotate,180"),
]


@pytest.mark.parametrize(("spec", "param"), MANUAL)
def test_the_manuals_examples(spec: str, param: str) -> None:
    assert process_param(spec) == param


@pytest.mark.parametrize("spec", [
    "", "blur,3", "resize", "resize,w_0", "resize,w_4097", "resize,m_stretch", "resize,p_1001", "resize,q_1",
    "resize,limit_2", "resize,color_red", "crop,g_middle", "rotate,361", "rotate", "rotate,-1", "format,gif",
    "info,x_1", "watermark,g_se", "resize,w_10%2F", "%2Finfo", "resize,w10",
])
def test_specs_the_manual_does_not_define_are_refused(spec: str) -> None:
    with pytest.raises(SpecError):
        process_param(spec)


def test_the_parameter_travels_signed_in_the_query() -> None:
    """The spec is part of what is signed (V4, as botocore signs it), so that
    a proxy or server cannot be handed another one; and it is URL-encoded on
    the wire, '/' and ',' included."""
    query: dict[str, str | None] = {"x-zos-process": process_param("resize,p_30%2Frotate,180")}
    assert query_string(query) == "x-zos-process=image%2Fresize%2Cp_30%2Frotate%2C180"
    signed = ours("v4", "GET", "/bucket/photos/cat.png", query, {})
    assert signed["authorization"] == botocore_v4("GET", "/bucket/photos/cat.png", query, {})
    other = ours("v4", "GET", "/bucket/photos/cat.png", {"x-zos-process": "image/info"}, {})
    assert other["authorization"] != signed["authorization"]
