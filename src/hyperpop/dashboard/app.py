"""The live dashboard: a small Starlette app over a store, read-only.

Routes: ``/`` (the page), ``/api/view?since=SEQ`` (the summary, and what the page lacks when
the log moved past ``SEQ``: see :func:`api_query`), ``/static/*`` (plotly.js from the plotly
package, the page's script and styles), ``/logs/{member}`` (a member's log, its last 200 kB)
and ``/healthz``.

``POST /api/request`` steers the run (a request into its store, :mod:`hyperpop.steer`), but only
with the dashboard's token: a random string printed on the terminal that started it, sent in the
``X-Hyperpop-Token`` header (or a ``token`` form field). Without a token the dashboard is
read-only and the endpoint answers 403.

Every request must name the dashboard in its ``Host`` header by a loopback name (``localhost``,
``127.0.0.1``, ``[::1]``) and its port: a page on another site whose name was made to resolve to
127.0.0.1 (DNS rebinding) is refused. Served on a network interface (``--host 0.0.0.0``), IP
addresses and this machine's own names are accepted too, never other names.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from hyperpop.dashboard.data import RunView, StoreSource, bulk
from hyperpop.dashboard.figures import page_data
from hyperpop.dashboard.report import asset, page, plotly_js

__all__ = ["answer", "api_query", "create_app", "serve"]

_TYPES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "plotly.min.js": "text/javascript; charset=utf-8",
}


_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


class _HostCheck:
    """ASGI middleware: answer 400 to a request whose ``Host`` is not this dashboard's."""

    def __init__(self, app: Any, *, host: str, port: int | None, extra: Iterable[str]):
        self.app, self.port = app, port
        self.names = set(_LOOPBACK) | {h.lower() for h in extra}
        self.network = host not in ("127.0.0.1", "localhost", "::1", "[::1]")
        if self.network:  # shared on purpose: this machine's names (addresses pass anyway)
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
            if not _is_address(host):
                self.names.add(host.lower())
        shown = port if port is not None else 8000
        self.hint = f"open http://localhost:{shown}/"

    def allowed(self, header: str) -> bool:
        """Whether a ``Host`` header (``name``, ``name:port``, ``[v6]:port``) names us."""
        header = header.lower()
        if header.startswith("["):
            name, _, rest = header.partition("]")
            name, port = name + "]", rest.removeprefix(":")
            if rest and not rest.startswith(":"):
                return False
        else:
            name, _, port = header.partition(":")
        expected = {str(self.port)} | ({""} if self.port == 80 else set())
        if self.port is not None and port not in expected:
            return False
        return name in self.names or (self.network and _is_address(name))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            header = Headers(scope=scope).get("host", "")
            if not self.allowed(header):
                response = PlainTextResponse(
                    f"hyperpop dashboard: the Host {header!r} is not allowed (a request "
                    f"from another site); {self.hint}",
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
    except ValueError:
        return False
    return True


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _raw(body: str) -> Response:
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def _refused(why: str, status: int = 400) -> Response:
    """The answer to a steering request that is not made: ``{"error": why}``."""
    return JSONResponse({"error": why}, status_code=status)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def api_query(params: Any, view: RunView, epoch: str) -> tuple[int, str, str, int]:
    """What ``/api/view`` is asked for: ``(since, metric, x, series_since)``.

    ``since`` is the log position the page has (-1, the default: nothing), ``epoch`` the
    :attr:`StoreSource.epoch` its data came from (if given; another one, or a position past
    the log's end, means the store was replaced: everything is sent again), ``metric`` the
    metric its score plot shows (default: the optimised one), ``x`` ``step`` or ``time``
    (time adds the wall times), ``series_since`` the position its score plot's series are
    at (-1 after it switched metric or axis; default ``since``).
    """
    since = _int(params.get("since"), -1)
    if since > view.seq or params.get("epoch") not in (None, epoch):
        since = -1
    series_since = min(_int(params.get("series_since"), since), since)
    metric = params.get("metric") or view.pop.metric or "score"
    x = "time" if params.get("x") == "time" else "step"
    return since, metric, x, series_since


def answer(source: StoreSource, params: Any) -> str:
    """The body of ``/api/view`` for the query ``params`` (see :func:`api_query`): the store's
    new events folded, then the summary, and what the page lacks if the log moved past what
    it has; or the store's error."""
    view = source.refresh()
    if view is None:
        return _dumps({"error": source.error})
    epoch = source.epoch
    since, metric, x, series_since = api_query(params, view, epoch)
    head = _dumps({"seq": view.seq, "summary": view.summary(source.alive)})
    if since == view.seq and series_since == since:
        return head

    def build(v: RunView, alive: bool | None) -> str:
        with bulk():
            data = page_data(
                v,
                since=since,
                metrics=[metric],
                times=x == "time",
                series_since=series_since,
                alive=alive,
            )
            data["epoch"] = epoch
            return _dumps(data)

    # serialised once per change of the log and question, however many pages ask
    body = source.cached(("view", since, metric, x, series_since), build)
    return head[:-1] + ',"view":' + body + "}"


def create_app(
    db: str | os.PathLike[str],
    *,
    interval: float = 1.0,
    source: StoreSource | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    allowed_hosts: Iterable[str] = (),
    token: str | None = None,
) -> Starlette:
    """The dashboard app for the store at ``db``.

    The store is opened read-only and re-read incrementally on each poll; a missing, corrupt
    or newer store gives an error message on the page (and in ``/api/view``), never a crash.

    Args:
        db: the run's SQLite store.
        interval: seconds between the page's polls.
        source: an already refreshed source over ``db`` (saves folding the log again).
        host: the interface it is served on; a loopback one accepts only loopback names in
            the ``Host`` header, another one also IP addresses and this machine's names.
        port: the port it is served on, required in the ``Host`` header (None: any).
        allowed_hosts: more names to accept in the ``Host`` header (e.g. behind a proxy).
        token: the secret that ``POST /api/request`` needs (None: read-only, it answers 403).
    """
    source = source if source is not None else StoreSource(db)
    name = Path(db).name

    def index(request: Request) -> Response:
        view = source.refresh()
        config: dict[str, Any] = {"api": "api/view", "interval": int(interval * 1000)}
        if view is None:
            config = {"error": source.error}
        body = page(title=f"hyperpop: {name}", subtitle=name, note="live", config=config)
        return HTMLResponse(body, status_code=200 if view is not None else 503)

    def api_view(request: Request) -> Response:
        return _raw(answer(source, request.query_params))

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/view", api_view),
            Route("/api/request", api_request, methods=["POST"]),
            Route("/logs/{member:int}", member_log),
            Route("/static/{name}", static),
            Route("/healthz", healthz),
        ],
        exception_handlers={404: not_found, 500: server_error},
        middleware=[Middleware(_HostCheck, host=host, port=port, extra=list(allowed_hosts))],
    )
    app.state.source = source
    app.state.db = db
    app.state.token = token
    return app


def static(request: Request) -> Response:
    """The page's script and styles, and plotly.js."""
    name = request.path_params["name"]
    if name not in _TYPES:
        return PlainTextResponse("not found", status_code=404)
    text = plotly_js() if name == "plotly.min.js" else asset(name)
    return Response(
        text, media_type=_TYPES[name], headers={"Cache-Control": "public, max-age=3600"}
    )


async def _body(request: Request) -> tuple[dict[str, Any], str] | Response:
    """A steering request's body and the token it gives (in the header, or a form's field),
    or the answer to a body that does not decode."""
    body: dict[str, Any] = {}
    given = request.headers.get("x-hyperpop-token", "")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _refused("the body is not JSON")
        return body, given
    # a form (application/x-www-form-urlencoded); data as JSON in a "data" field
    from urllib.parse import parse_qsl

    body = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    given = given or str(body.pop("token", ""))
    member = body.get("member", "").strip()
    if member.isascii() and member.isdigit():  # a form's fields are text: "3" is member 3
        body["member"] = int(member)
    try:
        body["data"] = json.loads(body.get("data") or "{}")
    except ValueError:
        return _refused("data is not JSON")
    return body, given


async def api_request(request: Request) -> Response:
    """Steer the run: ``{"kind", "member", "data"}`` (see :meth:`Steer.request`), with the
    dashboard's token."""
    read = await _body(request)
    if isinstance(read, Response):
        return read
    body, given = read
    token: str | None = request.app.state.token
    if token is None or not hmac.compare_digest(given.encode(), token.encode()):
        why = "this dashboard is read-only" if token is None else "a wrong or missing token"
        return _refused(f"{why}: actions need the token printed where the dashboard started", 403)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_steer, request.app.state.db, body)


def healthz(request: Request) -> Response:
    """Whether the store reads (``{"ok": true}``)."""
    return JSONResponse({"ok": request.app.state.source.error is None})


async def not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("not found", status_code=404)


async def server_error(request: Request, exc: Exception) -> Response:
    # never a stack trace in the browser
    return PlainTextResponse(f"hyperpop dashboard error: {type(exc).__name__}: {exc}", 500)


def _steer(db: str | os.PathLike[str], body: dict[str, Any]) -> Response:
    """Make the request ``body`` describes and answer with the driver's answer."""
    from hyperpop.space import SpaceError
    from hyperpop.steer import Steer
    from hyperpop.store.sqlite import StoreError

    kind = str(body.get("kind", ""))
    member = body.get("member")
    data = body.get("data") or {}
    if member == "":  # an empty form field: no member
        member = None
    try:
        # no int() here: the request's own check refuses a member that is not an int
        # (int() read a JSON true as member 1 and 1.7 as member 1)
        if not isinstance(data, dict):
            raise ValueError("data must be an object")
        answer = Steer(db, timeout=10.0, origin="dashboard").request(kind, member, data)
    except (StoreError, SpaceError, ValueError, TypeError) as e:
        return _refused(str(e))
    return JSONResponse(
        {"id": answer.id, "kind": answer.kind, "status": answer.status, "reason": answer.reason}
    )


def member_log(request: Request) -> Response:
    """The tail of a member's log (``DB-logs/member-N.log``)."""
    from hyperpop.checkpoints import log_path_for

    db = request.app.state.db
    path = log_path_for(db, int(request.path_params["member"]))
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200_000))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return PlainTextResponse(f"no log for this member yet ({path.name})", status_code=404)
    return PlainTextResponse(text, headers={"Cache-Control": "no-store"})


def serve(
    db: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    interval: float = 1.0,
    log_level: str = "warning",
    source: StoreSource | None = None,
    token: str | None = None,
) -> None:
    """Serve the dashboard of ``db`` until interrupted (Ctrl-C); ``token`` enables actions."""
    import uvicorn

    app = create_app(db, interval=interval, source=source, host=host, port=port, token=token)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
