"""The review web app (Starlette): pages, a JSON API, Server-Sent Events and archive files.

Pages are static HTML shipped in edge/review/static; the JavaScript fills them from /api/* and the
/api/stream event stream with textContent only (names never become markup). The server escapes the
few values it writes into HTML itself. With a token (required beyond loopback) every request needs it:
`?token=` once (then a cookie) or `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from onen.edge.review.archive_view import ArchiveView
from onen.edge.review.model_view import model_report
from onen.edge.review.state import ReviewState

if TYPE_CHECKING:
    from onen.edge.config import StationConfig

PAGES = {"live": "Live", "defects": "Defects", "stats": "Stats", "model": "Model"}
COOKIE = "onen_review_token"
STREAM_POLL_S = 0.2  # how often the stream looks for a new state version (latest wins in between)
STREAM_KEEPALIVE_S = 10.0


def static_dir() -> Path:
    return Path(str(resources.files("onen.edge.review").joinpath("static")))


def create_app(config: StationConfig, state: ReviewState, archive: ArchiveView, fleet: bool = False) -> Starlette:
    token = config.review.token
    station = config.station

    def page(name: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
        template = (static_dir() / "page.html").read_text(encoding="utf-8")

        async def handler(request: Request) -> HTMLResponse:
            nav = "".join(_nav_link(key, label, key == name) for key, label in PAGES.items())
            body = (
                template.replace("{{title}}", html.escape(f"{PAGES[name]} · {station}"))
                .replace("{{station}}", html.escape(station))
                .replace("{{nav}}", nav)
                .replace("{{page}}", html.escape(name))
                .replace("{{fleet}}", "true" if fleet else "false")
            )
            return HTMLResponse(body, headers={"Cache-Control": "no-store"})

        return handler

    async def api_state(request: Request) -> JSONResponse:
        return JSONResponse({"station": station, "fleet": fleet, **state.snapshot()})

    encoded = _EncodedState()

    def snapshot_text() -> tuple[int, str]:
        if encoded.version != state.version:
            snapshot = state.snapshot()
            encoded.version = snapshot["version"]
            encoded.text = json.dumps({"station": station, "fleet": fleet, **snapshot}, default=str)
        return encoded.version, encoded.text

    async def stream(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            sent, idle = -1, 0.0
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                if state.version != sent:
                    sent, text = snapshot_text()
                    idle = 0.0
                    yield f"data: {text}\n\n"
                elif idle >= STREAM_KEEPALIVE_S:
                    idle = 0.0
                    yield ": keepalive\n\n"
                await asyncio.sleep(STREAM_POLL_S)
                idle += STREAM_POLL_S

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def overlay(request: Request) -> Response:
        jpeg = state.overlay(request.path_params["station"], request.path_params["camera"])
        if jpeg is None:
            return PlainTextResponse("no overlay yet", status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def defects(request: Request) -> JSONResponse:
        q = request.query_params
        try:
            since = float(q["since"]) if q.get("since") else None
            until = float(q["until"]) if q.get("until") else None
            page_no = int(q.get("page") or 0)
        except ValueError:
            return JSONResponse({"error": "since/until must be epoch seconds, page an integer"}, status_code=400)
        listing = await asyncio.to_thread(archive.list, q.get("camera", ""), q.get("class", ""), since, until, page_no)
        return JSONResponse(listing)

    async def defect_detail(request: Request) -> JSONResponse:
        detail = await asyncio.to_thread(archive.detail, request.path_params["entry"])
        if detail is None:
            return JSONResponse({"error": "no such archive entry"}, status_code=404)
        return JSONResponse(detail)

    async def defect_file(request: Request) -> Response:
        path = archive.file(request.path_params["entry"], request.path_params["kind"])
        if path is None:
            return PlainTextResponse("no such archive file", status_code=404)
        return FileResponse(path)

    async def mark(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            record = await asyncio.to_thread(archive.mark, str(body.get("id", "")), str(body.get("mark", "")))
        except KeyError:
            return JSONResponse({"error": "no such archive entry"}, status_code=404)
        except (ValueError, AttributeError) as error:
            return JSONResponse({"error": str(error) or "expected JSON {id, mark}"}, status_code=400)
        return JSONResponse(record)

    async def marks_csv(request: Request) -> Response:
        text = await asyncio.to_thread(archive.marks_csv)
        return Response(
            text,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{_filename(station)}-marks.csv"'},
        )

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(state.station_stats(request.query_params.get("station", station)))

    async def model_api(request: Request) -> JSONResponse:
        model = await asyncio.to_thread(model_report, config)
        marks = await asyncio.to_thread(archive.marks)
        marked: dict[str, dict[str, int]] = {}
        for record in marks.values():
            per_camera = marked.setdefault(str(record.get("camera")), {"confirmed": 0, "false reject": 0})
            per_camera[record["mark"]] = per_camera.get(record["mark"], 0) + 1
        snapshot = state.snapshot()["stations"].get(station, {})
        serving = {name: (cam.get("last") or {}).get("model") for name, cam in snapshot.get("cameras", {}).items()}
        inspected = {name: cam["ok"] + cam["defect"] for name, cam in snapshot.get("cameras", {}).items()}
        return JSONResponse(
            {
                **model,
                "marked": marked,
                "serving": serving,
                "inspected": inspected,
                "events": state.events(station)[-100:],
            }
        )

    routes = [
        Route("/", page("live")),
        Route("/defects", page("defects")),
        Route("/stats", page("stats")),
        Route("/model", page("model")),
        Route("/api/state", api_state),
        Route("/api/stream", stream),
        Route("/api/overlay/{station}/{camera}", overlay),
        Route("/api/defects", defects),
        Route("/api/defects/{entry:path}/file/{kind}", defect_file),
        Route("/api/defect/{entry:path}", defect_detail),
        Route("/api/marks", mark, methods=["POST"]),
        Route("/api/marks.csv", marks_csv),
        Route("/api/stats", stats),
        Route("/api/model", model_api),
        Mount("/static", StaticFiles(directory=static_dir()), name="static"),
    ]
    middleware = [Middleware(TokenMiddleware, token=token)] if token else []
    return Starlette(routes=routes, middleware=middleware)


@dataclass
class _EncodedState:
    """One JSON encoding per state version, shared by every open page."""

    version: int = -1
    text: str = ""


class TokenMiddleware(BaseHTTPMiddleware):
    """Every request carries the token: a cookie (set from `?token=` on first use) or a Bearer header."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        candidates = [given, request.cookies.get(COOKIE), header[7:] if header.lower().startswith("bearer ") else None]
        if not any(c and hmac.compare_digest(c.encode(), self.token.encode()) for c in candidates):
            return PlainTextResponse("a token is required: open the page with ?token=... once", status_code=401)
        response = await call_next(request)
        if given:
            response.set_cookie(COOKIE, given, httponly=True, samesite="strict")
        return response


def _nav_link(key: str, label: str, here: bool) -> str:
    href = "/" if key == "live" else f"/{key}"
    css = ' class="here"' if here else ""
    return f'<a href="{href}"{css}>{html.escape(label)}</a>'


def _filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
