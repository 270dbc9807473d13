"""HTTP for the review page (aiohttp): the static page, its JSON API and ``/healthz``.

The page shows text written by strangers and writes to a topic a model learns from, so:

- the script and the style are files of their own and the Content-Security-Policy allows no
  inline script or style: markup smuggled into the page by a post could not run (the script
  also builds the DOM with ``textContent`` only, never markup from data);
- a write needs ``Content-Type: application/json`` (which a cross-site form cannot send and a
  cross-site ``fetch`` can only after a preflight this server never grants) and, when the
  browser names an ``Origin``, this server's own: another site cannot answer in an analyst's
  name;
- every request must name this server in its ``Host`` header (localhost, a loopback address,
  or one of ``CRISIS_REVIEW_PUBLIC_HOSTS``): a hostile site that points its own name at this
  machine (DNS rebinding) makes Origin and Host agree, but not name an allowed host.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from stream.errors import BrokerError
from stream.review.answers import RequestError
from stream.review.service import Review
from stream.review.views import event_view, progress_view

__all__ = ["REVIEW", "build_app", "run_review", "serve"]

log = logging.getLogger(__name__)

REVIEW = web.AppKey("review", Review)
STATIC = Path(__file__).resolve().parent / "static"
#: the page's files: path -> (file under static/, content type)
FILES = {
    "/": ("index.html", "text/html"),
    "/static/review.js": ("review.js", "text/javascript"),
    "/static/review.css": ("review.css", "text/css"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' https: http:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
#: largest request body: an answer with 200 word marks is about 20 KB
MAX_BODY = 64 * 1024
MAX_LIMIT = 500
T = TypeVar("T")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; refusals and broker failures as JSON reasons."""
    try:
        if not _allowed_host(request.host, request.app[REVIEW].config.public_hosts):
            raise RequestError(421, "this server does not answer to that host name")
        response = await handler(request)
    except RequestError as exc:
        response = web.json_response({"error": exc.reason}, status=exc.status)
    except BrokerError as exc:
        log.warning("an answer was not stored: %s", exc)
        response = web.json_response({"error": f"not stored, try again: {exc}"}, status=503)
    except web.HTTPException as exc:
        exc.headers.update(HEADERS)
        raise
    response.headers.update(HEADERS)
    return response


LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _allowed_host(host: str, public: tuple[str, ...]) -> bool:
    """``host`` (a Host header: name, IPv4, [IPv6], optional port) is loopback or public."""
    if host in public:
        return True
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]:" in host else host
    name = name.strip("[]").lower()
    return name in LOOPBACK or name in {h.lower() for h in public}


async def _body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise RequestError(415, "send the body as application/json")
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise RequestError(403, "a write must come from this page")
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError(400, "the body is not JSON") from None


async def _blocking(call: Callable[[Any], T], arg: Any) -> T:
    """Producing waits for the broker: off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, call, arg)


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise RequestError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


async def _queue(request: web.Request) -> web.Response:
    review = request.app[REVIEW]
    task = request.query.get("task", "informative")
    items, total = review.state.queue(task, _limit(request.query.get("limit", "50")))
    events = [event_view(item, task) for item in items]
    return web.json_response({"task": task, "total": total, "events": events})


async def _feedback(request: web.Request) -> web.Response:
    answer = await _blocking(request.app[REVIEW].answer, await _body(request))
    return web.json_response({"id": answer.id, "event_id": answer.event_id, "label": answer.label})


async def _undo(request: web.Request) -> web.Response:
    retraction, item = await _blocking(request.app[REVIEW].undo, await _body(request))
    back = item is not None and retraction.task in item.tasks
    view = event_view(item, retraction.task) if item is not None and back else None
    return web.json_response({"id": retraction.id, "retracts": retraction.retracts, "event": view})


async def _progress(request: web.Request) -> web.Response:
    review = request.app[REVIEW]
    today = review.now().date()
    return web.json_response(progress_view(review.state.progress(today), today))


async def _healthz(request: web.Request) -> web.Response:
    review = request.app[REVIEW]
    alive = review.follower.alive
    return web.json_response(
        {
            "status": "ok" if alive else "the consumer stopped",
            "partitions": review.follower.partitions,
            "rejected": dict(review.rejected),
            **review.state.sizes(),
        },
        status=200 if alive else 503,
    )


def _static(body: bytes, content_type: str) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return handler


def build_app(review: Review) -> web.Application:
    """The aiohttp application; starting it starts ``review``, cleaning it up stops it."""
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[REVIEW] = review
    for path, (name, content_type) in FILES.items():
        app.router.add_get(path, _static((STATIC / name).read_bytes(), content_type))
    app.router.add_get("/api/queue", _queue)
    app.router.add_get("/api/progress", _progress)
    app.router.add_post("/api/feedback", _feedback)
    app.router.add_post("/api/undo", _undo)
    app.router.add_get("/healthz", _healthz)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    review = app[REVIEW]
    review.start()
    yield
    await asyncio.get_running_loop().run_in_executor(None, review.stop)


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (0: any free port); the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    return runner, int(bound)


def run_review(review: Review) -> None:
    """Serve the page until SIGINT or SIGTERM."""
    config = review.config
    log.info(
        "review page on http://%s:%d/ (review topic %s, feedback topic %s)",
        config.host,
        config.port,
        config.review_topic,
        config.feedback_topic,
    )
    web.run_app(build_app(review), host=config.host, port=config.port, print=None, access_log=None)
