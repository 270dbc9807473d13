"""Malformed image references (paths and URLs from an open topic) become an ``image_error``:
nothing else escapes the image source or branch, so the event is still labelled from its text.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.images.branch import ImageBranch
from stream.images.decode import ImageError
from stream.images.source import ImageOptions, load_image_bytes
from stream.schemas import ImageRef, InputEvent, Origin

from .image_utils import encode, sample_rgb

BAD_REFS = [
    {"path": "a\x00b.jpg"},
    {"path": "\x00"},
    {"path": "x" * 5000},
    {"url": "http://example.org:abc/x.jpg"},
    {"url": "http://example.org:99999/x.jpg"},
    {"url": "http://example.org:-1/x.jpg"},
    {"url": "http://[::1/x.jpg"},
    {"url": "http://[zz::1]/x.jpg"},
    {"url": "http://a..example.org/x.jpg"},
    {"url": f"http://{'x' * 64}.example.org/x.jpg"},
    {"url": "http://.example.org/x.jpg"},
    {"url": "http://exa\x00mple.org/x.jpg"},
    {"url": "http://example.org/x\r\nHost: evil.jpg"},
    {"url": "http://\udcff.org/x.jpg"},
]


def _fake_resolver(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """Like getaddrinfo (a str host is IDNA-encoded first), answering a private address."""
    if isinstance(host, str):
        host.encode("idna")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80))]


@pytest.fixture()
def no_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket, "getaddrinfo", _fake_resolver)
    yield


def _options(root: Path) -> ImageOptions:
    return ImageOptions(
        root=root, fetch_enabled=True, fetch_allow_hosts=("*",), fetch_timeout_s=0.5
    )


class _FailingModel:
    """Stands in for an image model: decoding runs, encoding is never reached by bad refs."""

    encoder = SimpleNamespace(size=224)

    def encode(self, pixels: object) -> Any:
        raise RuntimeError("not used")


@pytest.mark.parametrize("ref", BAD_REFS, ids=lambda r: repr(r)[:48])
def test_bad_image_references_raise_image_errors(tmp_path: Path, ref: dict[str, str], no_dns):
    with pytest.raises(ImageError):
        load_image_bytes(ImageRef(**ref), _options(tmp_path))


#: refs that must fail before any name is looked up (safe with the real resolver)
FAIL_BEFORE_LOOKUP = [r for r in BAD_REFS if "path" in r or "example.org/x.jpg" not in r["url"]]
FAIL_BEFORE_LOOKUP += [{"url": "http://a..example.org/x.jpg"}, {"url": "http://.example.org/x"}]


@pytest.mark.parametrize("ref", FAIL_BEFORE_LOOKUP, ids=lambda r: repr(r)[:48])
def test_real_resolver_turns_bad_hosts_into_image_errors(tmp_path: Path, ref: dict[str, str]):
    with pytest.raises(ImageError):
        load_image_bytes(ImageRef(**ref), _options(tmp_path))


def test_the_branch_turns_every_bad_reference_into_an_image_error(tmp_path: Path, no_dns):
    (tmp_path / "ok.jpg").write_bytes(encode(sample_rgb()))
    branch = ImageBranch(_FailingModel(), _options(tmp_path))  # type: ignore[arg-type]
    events = [InputEvent(id=str(i), text="t", image=ImageRef(**r)) for i, r in enumerate(BAD_REFS)]
    views = branch.run(events)
    for ref, view in zip(BAD_REFS, views, strict=True):
        assert view is not None and view.error, ref
        assert not view.ok


_path_text = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["\x00", "..", "/", "/etc/passwd", "a/../../b", "ok.jpg", "ok.jpg\x00", "%00", "~", "."]
)
_host = st.text(st.characters(codec="utf-8", exclude_characters="/?#@"), max_size=40) | (
    st.lists(st.text("abc-.\x00xn", max_size=70), min_size=0, max_size=5).map(".".join)
)
_port = st.sampled_from(["", ":", ":80", ":abc", ":99999", ":-1", ":0", ":65536", ": 80"])
_url = st.one_of(
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "file", ""]),
        _host | st.sampled_from(["[::1", "[zz::1]", "[::1]]", "[", "]", "[fe80::1%eth0]"]),
        _port,
        _path_text,
    ),
    st.text(max_size=80),
)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    refs=st.lists(
        st.one_of(_path_text.map(lambda p: {"path": p}), _url.map(lambda u: {"url": u})),
        min_size=1,
        max_size=4,
    )
)
def test_no_exception_escapes_the_image_source_or_branch(
    tmp_path: Path, no_dns, refs: list[dict[str, str]]
):
    branch = ImageBranch(_FailingModel(), _options(tmp_path))  # type: ignore[arg-type]
    events = [InputEvent(id=str(i), text="t", image=ImageRef(**r)) for i, r in enumerate(refs)]
    for ev in events:
        with contextlib.suppress(ImageError):
            load_image_bytes(ev.image, branch.options)  # type: ignore[arg-type]
    views = branch.run(events)
    assert all(v is not None and v.error for v in views)


def test_an_event_with_a_bad_image_reference_is_labelled_from_its_text(tmp_path: Path, no_dns):
    from stream.pipeline import Pipeline

    from .image_utils import image_bundle

    pipeline = Pipeline(image_bundle(), 3, None, _options(tmp_path))
    events = [
        InputEvent(id=str(i), text="houses flooded, people need water", image=ImageRef(**r))
        for i, r in enumerate(BAD_REFS)
    ]
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(len(events))]
    outs = pipeline.label(events, origins)
    assert len(outs) == len(events)
    for out in outs:
        assert out.image_error and out.labels and out.modality == {"text": 1.0, "image": 0.0}
