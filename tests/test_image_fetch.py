"""Image fetching cannot hold the worker: one deadline per request (connect, headers, body,
redirects), even against a server that trickles a byte at a time; a batch's URLs fetched
concurrently under one time budget; the worker's heartbeat kept fresh meanwhile.

The servers here are real sockets on 127.0.0.1 (hence ``allow_private`` in every policy).
"""

from __future__ import annotations

import functools
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stream.images.branch import ImageBranch
from stream.images.decode import ImageError
from stream.images.fetch import FetchPolicy, fetch_url
from stream.images.source import BatchLoader, ImageOptions
from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.schemas import ImageRef, InputEvent, Origin
from stream.settings import Settings
from stream.sinks import MemorySink
from stream.sources import MemorySource
from stream.worker import Worker

from .conftest import BUNDLE
from .image_utils import b64, encode, image_bundle, sample_rgb

TRICKLE_EVERY_S = 0.1
#: a trickle ends after this long even if the client stays: a regression fails, never hangs
TRICKLE_FOR_S = 6.0
IMAGE = encode(sample_rgb())


def _read_request(conn: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    target = line.split(" ")[1] if line.count(" ") >= 2 else "/"
    return target.split("?")[0]  # a query only makes URLs distinct


def _trickle(conn: socket.socket, data: bytes, stop: threading.Event) -> None:
    end = time.monotonic() + TRICKLE_FOR_S
    for i in range(len(data)):
        if stop.wait(TRICKLE_EVERY_S) or time.monotonic() > end:
            return
        conn.sendall(data[i : i + 1])


def _respond(conn: socket.socket, path: str, stop: threading.Event, port: int) -> None:
    """What a hostile or slow image server does, by path."""
    endless_headers = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"x" * 10_000 + b"\r\n"
    if path == "/trickle-headers":  # every byte in time for a per-read timeout, never done
        _trickle(conn, endless_headers, stop)
    elif path == "/trickle-chunk-size":  # headers at once, then a chunk-size line byte by byte
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        _trickle(conn, b"10;" + b"x" * 10_000 + b"\r\n", stop)
    elif path == "/trickle-body":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n")
        _trickle(conn, b"\0" * 50_000, stop)
    elif path == "/redirect-then-trickle":  # a quick redirect, then a trickling hop
        location = f"http://127.0.0.1:{port}/trickle-headers"
        conn.sendall(
            f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
        )
    elif path == "/stall":  # accepts, then says nothing for longer than any timeout here
        stop.wait(5.0)
    elif path == "/delay":  # a slow but honest server: 0.5 s, then the image
        if stop.wait(0.5):
            return
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode()
        conn.sendall(head + IMAGE)
    else:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


class SlowServer:
    """A raw TCP server on 127.0.0.1, one thread per connection, optionally TLS."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.served = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self.served += 1
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            _respond(conn, _read_request(conn), self.stop, self.port)
        except (OSError, ssl.SSLError):
            pass  # the client gave up: what the deadline is for
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[SlowServer]:
    srv = SlowServer()
    yield srv
    srv.close()


def _policy(timeout_s: float = 1.0) -> FetchPolicy:
    return FetchPolicy(allow_hosts=("127.0.0.1",), allow_private=True, timeout_s=timeout_s)


def _fetch_fails_on_time(url: str, timeout_s: float = 1.0) -> ImageError:
    t0 = time.monotonic()
    with pytest.raises(ImageError) as err:
        fetch_url(url, _policy(timeout_s))
    took = time.monotonic() - t0
    # a per-read timeout let /trickle-headers run until the server gave up (TRICKLE_FOR_S)
    assert took < timeout_s + 0.5, f"{url} held the fetch for {took:.1f}s"
    assert err.value.kind == "fetch_failed"
    return err.value


# -- one deadline per request -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/trickle-headers", "/trickle-chunk-size", "/trickle-body", "/redirect-then-trickle"],
)
def test_a_trickling_server_is_cut_off_at_the_request_deadline(server: SlowServer, path: str):
    err = _fetch_fails_on_time(server.url + path)
    assert "timed out" in err.message


def test_an_honest_slow_server_within_the_deadline_is_fetched(server: SlowServer):
    assert fetch_url(f"{server.url}/delay", _policy(2.0)) == IMAGE


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SlowServer, Path]]:
    """A TLS server with a self-signed certificate for 127.0.0.1 (made with openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = SlowServer(tls=ctx)
    yield srv, cert
    srv.close()


def test_the_deadline_holds_over_tls(
    tls_server: tuple[SlowServer, Path], monkeypatch: pytest.MonkeyPatch
):
    srv, cert = tls_server
    trusting = functools.partial(ssl.create_default_context, cafile=str(cert))
    monkeypatch.setattr(ssl, "create_default_context", trusting)
    assert fetch_url(f"{srv.url}/delay", _policy(2.0)) == IMAGE  # the TLS path works
    _fetch_fails_on_time(f"{srv.url}/trickle-headers")


def test_a_server_that_never_answers_the_tls_handshake_is_cut_off(server: SlowServer):
    # the plain-HTTP server reads a request first, so a TLS ClientHello gets no answer
    _fetch_fails_on_time(server.url.replace("http://", "https://") + "/x")


# -- a batch's URLs: concurrent, under one budget -------------------------------------------


def _url_events(urls: list[str]) -> list[InputEvent]:
    return [
        InputEvent(id=f"e{i}", text="bridge collapsed, people trapped", image=ImageRef(url=u))
        for i, u in enumerate(urls)
    ]


def _options(**kw: object) -> ImageOptions:
    base: dict[str, object] = {
        "fetch_enabled": True,
        "fetch_allow_hosts": ("127.0.0.1",),
        "fetch_allow_private": True,
        "fetch_timeout_s": 1.0,
        "fetch_concurrency": 8,
        "fetch_batch_budget_s": 2.0,
    }
    base.update(kw)
    return ImageOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ibundle() -> Bundle:
    return image_bundle()


def test_fetch_concurrency_and_batch_budget_are_described_settings(
    monkeypatch: pytest.MonkeyPatch,
):
    for name in ("image_fetch_concurrency", "image_fetch_batch_budget_s"):
        assert Settings.model_fields[name].description
    assert Settings().image_fetch_batch_budget_s > Settings().image_fetch_timeout_s
    monkeypatch.setenv("CRISIS_IMAGE_FETCH_CONCURRENCY", "3")
    monkeypatch.setenv("CRISIS_IMAGE_FETCH_BATCH_BUDGET_S", "7.5")
    opts = ImageOptions.from_settings(Settings())
    assert (opts.fetch_concurrency, opts.fetch_batch_budget_s) == (3, 7.5)


def test_slow_urls_of_a_batch_take_the_budget_not_the_sum_of_timeouts(
    server: SlowServer, ibundle: Bundle
):
    """32 URLs that never answer, 1 s each: one after another that was 32 s; now 2 s."""
    events = _url_events([f"{server.url}/stall?n={i}" for i in range(32)])
    pipeline = Pipeline(ibundle, 3, None, _options())
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(len(events))]
    result = pipeline.label_batch(events, origins)
    took = result.timings.encode_image  # the image side: fetching, decoding, encoding
    assert took is not None and took < 2.0 + 1.0, f"32 slow URLs took {took}s"
    out = result.events
    # every event is labelled from its text, with the reason its image is missing
    assert len(out) == 32 and all(o.labels for o in out)
    kinds = [(o.image_error or "").split(":")[0] for o in out]
    assert set(kinds) <= {"fetch_failed", "batch_fetch_budget"}, kinds
    assert kinds.count("fetch_failed") >= 8  # the first eight ran into their own deadline
    assert kinds.count("batch_fetch_budget") >= 8  # the rest never fitted in the budget


def test_honest_slow_urls_are_fetched_concurrently(server: SlowServer, ibundle: Bundle):
    """16 URLs that answer after 0.5 s: 8 s one after another, about 1 s eight at a time."""
    events = _url_events([f"{server.url}/delay?n={i}" for i in range(16)])
    branch = ImageBranch(ibundle.image, _options(fetch_timeout_s=3.0, fetch_batch_budget_s=5.0))
    t0 = time.monotonic()
    views = branch.run(events)
    took = time.monotonic() - t0
    assert all(v is not None and v.ok for v in views), [v and v.error for v in views]
    assert took < 3.0, f"16 URLs of 0.5 s took {took:.1f}s"


def test_inline_images_and_urls_mix_in_order(server: SlowServer):
    loader = BatchLoader(_options(fetch_timeout_s=3.0))
    refs = [
        ImageRef(url=f"{server.url}/delay"),
        ImageRef(b64=b64(IMAGE)),
        ImageRef(url=f"{server.url}/missing"),
        ImageRef(path="x.jpg"),  # no image root: refused, not fetched
    ]
    calls: list[float] = []
    got = loader.load(refs, lambda: calls.append(time.monotonic()))
    assert got[0] == IMAGE and got[1] == IMAGE
    assert isinstance(got[2], ImageError) and got[2].kind == "fetch_failed"
    assert isinstance(got[3], ImageError) and got[3].kind == "path_refused"
    assert calls  # progress was reported while the URLs were fetched
    loader.close()


# -- the worker stays live during a long batch ----------------------------------------------


def _sample_age(worker: Worker, done: threading.Event, ages: list[float]) -> None:
    while not done.wait(0.02):
        ages.append(time.monotonic() - worker.heartbeat)


def test_the_heartbeat_stays_fresh_while_a_batch_fetches_images(
    server: SlowServer, ibundle: Bundle
):
    """8 URLs that never answer, 2 at a time, 1 s each, a 3 s budget: the step lasts ~3 s (it
    was 8 s, all without a heartbeat); /healthz compares the heartbeat, so it must stay fresh."""
    settings = Settings(
        bundle=BUNDLE,
        batch_max_events=8,
        reload_interval_s=0,
        image_fetch_enabled=True,
        image_fetch_allow_hosts=["127.0.0.1"],
        image_fetch_allow_private=True,
        image_fetch_timeout_s=1.0,
        image_fetch_concurrency=2,
        image_fetch_batch_budget_s=3.0,
    )
    records = [
        orjson.dumps(
            {
                "id": f"e{i}",
                "text": "bridge collapsed, people trapped",
                "image": {"url": f"{server.url}/stall?w={i}"},
            }
        )
        for i in range(8)
    ]
    pipeline = Pipeline(ibundle, 3, None, ImageOptions.from_settings(settings))
    sink = MemorySink()
    worker = Worker(settings, MemorySource(records), sink, pipeline)
    ages: list[float] = []
    done = threading.Event()
    sampler = threading.Thread(target=_sample_age, args=(worker, done, ages), daemon=True)
    t0 = time.monotonic()
    sampler.start()
    try:
        stats = worker.run()
    finally:
        done.set()
        sampler.join()
    took = time.monotonic() - t0
    assert stats.labeled == 8
    assert took >= 2.5  # the batch really was long
    assert max(ages) < 1.5, f"heartbeat went {max(ages):.1f}s stale during a {took:.1f}s batch"
