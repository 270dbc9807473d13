"""Safe image input: decoding (formats, EXIF, hostile files, memory), where bytes may come
from (base64, a confined local root, opt-in URL fetching with SSRF guards)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stream.images.decode import ImageError, decode_image
from stream.images.fetch import FetchPolicy, check_address, fetch_url, host_allowed
from stream.images.source import ImageOptions, decode_base64, load_image_bytes, read_local
from stream.schemas import ImageRef

from .conftest import REPO
from .image_utils import b64, encode, hostile_images, png_bomb, sample_rgb

# -- decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_decodes_allowed_formats_to_the_model_input(fmt: str):
    img = decode_image(encode(sample_rgb(), fmt))
    assert img.pixels.shape == (224, 224, 3) and img.pixels.dtype == np.uint8
    assert (img.width, img.height) == (640, 427) and img.format == fmt
    assert img.pixels.std() > 20  # a real photo, not a blank


def test_animated_gif_uses_the_first_frame():
    red = Image.new("RGB", (64, 48), (255, 0, 0))
    blue = Image.new("RGB", (64, 48), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    px = decode_image(data).pixels.astype(int)
    assert px[..., 0].mean() > 200 and px[..., 2].mean() < 50


def test_exif_rotation_gives_the_displayed_size():
    img = Image.fromarray(sample_rgb())
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    data = encode(img, "JPEG", exif=exif.tobytes())
    decoded = decode_image(data)
    assert (decoded.width, decoded.height) == (427, 640)


def test_transparency_is_composited_over_white():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    px = decode_image(encode(rgba, "PNG")).pixels
    assert px.min() == 255


def test_other_formats_are_refused_even_if_pillow_reads_them():
    bmp = encode(sample_rgb(), "BMP")
    with pytest.raises(ImageError) as err:
        decode_image(bmp)
    assert err.value.kind == "unsupported_format"


@pytest.mark.parametrize("name", sorted(hostile_images()))
def test_hostile_images_raise_image_error_with_a_reason(name: str):
    data, kind = hostile_images()[name]
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as err:
        decode_image(data)
    assert err.value.kind == kind, err.value
    assert err.value.message
    assert time.perf_counter() - t0 < 2.0  # refused from the header, not after decoding


def test_pixel_and_byte_caps_are_configurable():
    data = encode(sample_rgb(), "PNG")
    with pytest.raises(ImageError, match="too_many_pixels"):
        decode_image(data, max_pixels=640 * 427 - 1)
    with pytest.raises(ImageError, match="too_large"):
        decode_image(data, max_bytes=len(data) - 1)
    assert decode_image(data, max_pixels=640 * 427, max_bytes=len(data)).width == 640


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["JPEG", "PNG", "GIF", "WEBP"]),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.floats(0.05, 1.0),
)
def test_corrupted_files_never_escape_as_other_exceptions(fmt, edits, cut):
    data = bytearray(encode(sample_rgb("flower.jpg")[::4, ::4], fmt))
    for pos, value in edits:
        data[int(pos * (len(data) - 1))] = value
    data = data[: max(1, int(len(data) * cut))]
    try:
        img = decode_image(bytes(data))
    except ImageError as exc:
        assert exc.kind
    else:
        assert img.pixels.shape == (224, 224, 3)


_MEMORY_PROBE = """
import re, sys
from stream.images.decode import ImageError, decode_image

def status(key):
    text = open("/proc/self/status").read()
    return int(re.search(key + r":\\s+(\\d+) kB", text).group(1)) * 1024

max_pixels = int(sys.argv[1])
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    try:
        decode_image(data, max_pixels=max_pixels, max_bytes=50_000_000)
        outcome = "decoded"
    except ImageError as exc:
        outcome = exc.kind
    print(outcome, status("VmHWM") - before)
"""

_CAN_RESET_PEAK = os.access("/proc/self/clear_refs", os.W_OK)


def _peak_growth(tmp_path: Path, images: list[bytes], max_pixels: int) -> list[tuple[str, int]]:
    """Decode each image in a fresh process; (outcome, peak RSS growth in bytes) per image."""
    paths = []
    for i, data in enumerate(images):
        paths.append(tmp_path / f"probe{i}.img")
        paths[-1].write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(max_pixels), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    return [(out[i], int(out[i + 1])) for i in range(0, len(out), 2)]


@pytest.mark.skipif(not _CAN_RESET_PEAK, reason="needs Linux /proc/self/clear_refs")
def test_memory_stays_bounded_by_the_pixel_cap(tmp_path: Path):
    """Every format at (or just under) its pixel cap decodes within max_pixels x 5 bytes
    (plus the model input and allocator slack); bombs are refused before allocating."""
    cap = 9_000_000
    full, half, quarter = (Image.linear_gradient("L").resize((s, s)) for s in (3000, 2121, 1500))
    images = {
        "rgb png": encode(full.convert("RGB"), "PNG"),
        "palette png": encode(full.convert("P"), "PNG"),
        "gray png": encode(full, "PNG"),
        "rgba png": encode(half.convert("RGBA"), "PNG"),
        "palette gif, transparent": encode(half.convert("P"), "GIF", transparency=0),
        "progressive jpeg": encode(full.convert("RGB"), "JPEG", progressive=True),
        "cmyk jpeg": encode(full.convert("CMYK"), "JPEG"),
        "webp": encode(quarter.convert("RGB"), "WEBP"),
        "png bomb 8000x8000": png_bomb(8000),
        "png 30000x30000 header": hostile_images()["png_30000x30000_header"][0],
    }
    results = dict(zip(images, _peak_growth(tmp_path, list(images.values()), cap), strict=True))
    bound = int(cap * 5.25) + 224 * 224 * 3 * 4 + 2_000_000
    for name, (outcome, growth) in results.items():
        if "bomb" in name or "header" in name:
            assert outcome == "too_many_pixels", name
            assert growth < 2_000_000, f"{name}: refusing grew memory by {growth / 1e6:.1f} MB"
        else:
            assert outcome == "decoded", (name, outcome)
            assert growth < bound, f"{name}: peak grew {growth / 1e6:.0f} MB > {bound / 1e6:.0f}"


# -- where the bytes come from ------------------------------------------------------------


def test_base64_with_and_without_data_uri():
    data = encode(sample_rgb(), "PNG")
    text = b64(data)
    assert decode_base64(text, 10_000_000) == data
    assert decode_base64("data:image/png;base64," + text, 10_000_000) == data
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_base64(wrapped, 10_000_000) == data
    with pytest.raises(ImageError, match="bad_base64"):
        decode_base64("not base64 at all!", 10_000_000)
    with pytest.raises(ImageError, match="too_large"):
        decode_base64("A" * 2_000_000, 1_000_000)  # refused before decoding


@pytest.fixture()
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(encode(sample_rgb()))
    (tmp_path / "secret.jpg").write_bytes(encode(sample_rgb("flower.jpg")))
    return root


def test_local_paths_are_confined_to_the_image_root(image_root: Path):
    assert read_local("sub/a.jpg", image_root, 10_000_000)[:2] == b"\xff\xd8"
    assert read_local(str(image_root / "sub" / "a.jpg"), image_root, 10_000_000)
    refused = ["../secret.jpg", str(image_root.parent / "secret.jpg"), "/etc/passwd", "sub/.."]
    for path in refused:
        with pytest.raises(ImageError) as err:
            read_local(path, image_root, 10_000_000)
        assert err.value.kind == "path_refused", path
    (image_root / "link.jpg").symlink_to(image_root.parent / "secret.jpg")
    with pytest.raises(ImageError, match="path_refused"):
        read_local("link.jpg", image_root, 10_000_000)
    with pytest.raises(ImageError, match="not_found"):
        read_local("sub/missing.jpg", image_root, 10_000_000)
    with pytest.raises(ImageError, match="too_large"):
        read_local("sub/a.jpg", image_root, 100)


def test_without_a_root_local_paths_are_disabled(image_root: Path):
    with pytest.raises(ImageError) as err:
        read_local(str(image_root / "sub" / "a.jpg"), None, 10_000_000)
    assert err.value.kind == "path_refused" and "CRISIS_IMAGE_ROOT" in err.value.message


def test_fifos_and_devices_are_refused_without_blocking(image_root: Path):
    os.mkfifo(image_root / "pipe.jpg")
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match="path_refused"):
        read_local("pipe.jpg", image_root, 10_000_000)
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(ImageError, match="path_refused"):
        read_local("/dev/zero", Path("/dev"), 10_000_000)


def test_url_fetching_is_off_by_default():
    with pytest.raises(ImageError) as err:
        load_image_bytes(ImageRef(url="http://127.0.0.1:9/x.jpg"), ImageOptions())
    assert err.value.kind == "fetch_disabled"


class _Handler(http.server.BaseHTTPRequestHandler):
    image = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/img.jpg":
            self._send(200, self.image, {"Content-Type": "image/jpeg"})
        elif self.path == "/redirect":
            self._send(302, b"", {"Location": f"http://127.0.0.1:{port}/img.jpg"})
        elif self.path == "/redirect-out":
            self._send(302, b"", {"Location": "http://elsewhere.example/img.jpg"})
        elif self.path == "/big":
            self._send(200, b"\0" * 200_000, {})
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, self.image, {})
        else:
            self._send(404, b"", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    _Handler.image = encode(sample_rgb())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _policy(**kw: object) -> FetchPolicy:
    base: dict[str, object] = {
        "allow_hosts": ("127.0.0.1",),
        "allow_private": True,
        "timeout_s": 2.0,
        "max_bytes": 100_000,
    }
    base.update(kw)
    return FetchPolicy(**base)  # type: ignore[arg-type]


def test_fetch_from_an_allowed_loopback_server(http_server: str):
    data = fetch_url(f"{http_server}/img.jpg", _policy())
    assert decode_image(data).width == 640
    assert fetch_url(f"{http_server}/redirect", _policy()) == data
    opts = ImageOptions(
        fetch_enabled=True, fetch_allow_hosts=("127.0.0.1",), fetch_allow_private=True
    )
    assert load_image_bytes(ImageRef(url=f"{http_server}/img.jpg"), opts) == data


def test_loopback_is_refused_without_allow_private(http_server: str):
    with pytest.raises(ImageError) as err:
        fetch_url(f"{http_server}/img.jpg", _policy(allow_private=False))
    assert err.value.kind == "fetch_refused" and "127.0.0.1" in err.value.message


@pytest.mark.parametrize(
    ("path", "policy", "kind"),
    [
        ("/img.jpg", {"allow_hosts": ("example.org",)}, "fetch_refused"),
        ("/redirect-out", {}, "fetch_refused"),
        ("/big", {}, "too_large"),
        ("/missing", {}, "fetch_failed"),
        ("/slow", {"timeout_s": 0.5}, "fetch_failed"),
    ],
)
def test_fetch_limits(http_server: str, path: str, policy: dict[str, object], kind: str):
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as err:
        fetch_url(http_server + path, _policy(**policy))
    assert err.value.kind == kind, err.value
    assert time.perf_counter() - t0 < 2.5


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://x/"])
def test_only_http_urls_are_fetched(url: str):
    with pytest.raises(ImageError, match="fetch_refused"):
        fetch_url(url, _policy(allow_hosts=("*",)))


@pytest.mark.parametrize(
    "ip",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.5", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1",
     # IPv4 inside IPv6: mapped, compatible, SIIT, NAT64 (well-known and local-use), 6to4
     "::ffff:10.0.0.1", "::127.0.0.1", "::10.0.0.1", "::ffff:0:10.0.0.1", "64:ff9b::a00:1",
     "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "2002:a00:1::1", "2002:7f00:1::1",
     "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo
     "fe80::1%eth0", "169.254.0.1", "ff02::1", "239.1.2.3", "::", "255.255.255.255",
     "198.18.0.1", "240.0.0.1", "fec0::1"],
)  # fmt: skip
def test_non_global_addresses_are_refused(ip: str):
    with pytest.raises(ImageError, match="fetch_refused"):
        check_address(ip, allow_private=False)


@pytest.mark.parametrize("ip", ["::", "0.0.0.0", "224.0.0.1", "ff02::1", "64:ff9b::e000:1"])
def test_non_unicast_addresses_are_refused_even_when_private_ones_are_allowed(ip: str):
    with pytest.raises(ImageError, match="fetch_refused"):
        check_address(ip, allow_private=True)


@pytest.mark.parametrize(
    "ip", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "64:ff9b::5db8:d822",
           "2002:5db8:d822::1", "::ffff:93.184.216.34"],
)  # fmt: skip
def test_global_addresses_pass_in_every_form(ip: str):
    check_address(ip, allow_private=False)


@pytest.mark.parametrize(
    ("host", "resolved"),
    [
        ("cdn.example.org", "10.0.0.1"),
        ("cdn.example.org", "::127.0.0.1"),
        ("cdn.example.org", "64:ff9b::a00:1"),
        ("cdn.example.org", "2002:a00:1::1"),
        ("cdn.example.org", "::ffff:10.0.0.1"),
        ("2130706433", None),  # decimal, octal and hex IPv4 that the resolver accepts
        ("0177.0.0.1", None),
        ("0x7f.0.0.1", None),
        ("127.1", None),
    ],
)
def test_refusal_names_the_host_not_the_internal_address(
    monkeypatch: pytest.MonkeyPatch, host: str, resolved: str | None
):
    import socket

    if resolved is not None:
        family = socket.AF_INET6 if ":" in resolved else socket.AF_INET
        info = (family, socket.SOCK_STREAM, 6, "", (resolved, 80))
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [info])
    with pytest.raises(ImageError) as err:
        fetch_url(f"http://{host}/img.jpg", _policy(allow_hosts=("*",), allow_private=False))
    assert err.value.kind == "fetch_refused"
    assert host in err.value.message
    for leaked in (resolved or "127.0.0.1", "10.0.0.1", "127.0.0.1", "a00:1"):
        assert leaked not in err.value.message


def test_global_addresses_pass_and_private_ones_only_when_allowed():
    assert str(check_address("93.184.216.34", allow_private=False)) == "93.184.216.34"
    assert str(check_address("10.0.0.1", allow_private=True)) == "10.0.0.1"


def test_host_allowlist_patterns():
    assert host_allowed("pbs.twimg.com", ("pbs.twimg.com",))
    assert host_allowed("a.b.example.org", ("*.example.org",))
    assert host_allowed("a.example.org", (".example.org",))
    assert not host_allowed("example.org.evil.com", ("example.org", "*.example.org"))
    assert not host_allowed("evilexample.org", ("*.example.org",))
    assert host_allowed("anything.test", ("*",))
    assert not host_allowed("pbs.twimg.com", ())
