"""A small real web server for driving the visit pages in a browser.

It serves `jaejin/visits/static/`, the two pages with the data attributes the real templates must
provide, and a WebSocket route that pumps frames through the real `SignallingHub`. The only
stand-in is authentication: the participant id comes from the query string and the roster is
declared by the test, where the application would take both from the session and the database.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from jaejin.core.i18n import translate
from jaejin.visits.signalling import (
    Broker,
    ParticipantRole,
    SharedFile,
    SignallingHub,
    SignallingRefused,
)

STATIC = Path(__file__).resolve().parents[2] / "jaejin" / "visits" / "static"
PAGE_TEXTS: dict[str, dict[str, str]] = json.loads((STATIC / "texts.json").read_text("utf-8"))
DOWNLOAD_LIMIT_BYTES = 20_000_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def texts_for(page: str, language: str) -> str:
    return json.dumps(
        {key: translate(language, msgid) for key, msgid in PAGE_TEXTS[page].items()},
        ensure_ascii=False,
    )


def page(title: str, main: str, script: str, language: str) -> str:
    return f"""<!doctype html>
<html lang="{language}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="/static/visit.css">
</head>
<body>
{main}
<script type="module" src="/static/{script}"></script>
</body>
</html>"""


class VisitServer:
    """One server worker: uvicorn in a background thread with its own event loop and hub."""

    def __init__(
        self,
        roster: Mapping[str, Mapping[str, ParticipantRole]],
        broker_factory: Callable[[], Broker],
        *,
        ws_origin: str | None = None,
    ) -> None:
        self.roster = roster
        self.broker_factory = broker_factory
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        #: Where pages served here open their socket (another worker, to test Redis fan-out).
        self.ws_origin = ws_origin
        self.hub: SignallingHub | None = None
        self.attachments: dict[str, tuple[str, str, bytes]] = {}
        self.sockets: dict[str, WebSocket] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ routes

    async def roster_lookup(self, visit_id: str) -> Mapping[str, ParticipantRole]:
        return self.roster.get(visit_id, {})

    async def visit_page(self, request: Request) -> HTMLResponse:
        visit_id = request.path_params["visit_id"]
        participant_id = request.path_params["participant_id"]
        language = request.query_params.get("lang", "en")
        role = self.roster.get(visit_id, {}).get(participant_id, ParticipantRole.PATIENT)
        ws_base = self.ws_origin or self.origin
        ws_base = ws_base.replace("http", "ws", 1)
        ws_url = f"{ws_base}/ws/visits/{visit_id}?participant={participant_id}"
        attributes = {
            "data-ws-url": ws_url,
            "data-ice-servers": "[]",
            "data-self-id": participant_id,
            "data-role": role.value,
            "data-upload-url": f"/visits/{visit_id}/files?participant={participant_id}",
            "data-participants": json.dumps({"dr-kim": "Dr Kim", "patient-lee": "Lee Minji"}),
            "data-texts": texts_for("visit", language),
        }
        if "measured_mbps" in request.query_params:
            attributes["data-measured-mbps"] = request.query_params["measured_mbps"]
        main = "<main id=\"visit\" " + " ".join(
            f'{name}="{html.escape(value, quote=True)}"' for name, value in attributes.items()
        ) + "></main>"
        return HTMLResponse(page("Visit", main, "visit.js", language))

    async def device_check_page(self, request: Request) -> HTMLResponse:
        language = request.query_params.get("lang", "en")
        attributes = {
            "data-download-url": "/throughput/download?bytes=1000000",
            "data-upload-url": "/throughput/upload",
            "data-upload-bytes": "500000",
            "data-required-mbps": request.query_params.get("required", "5"),
            "data-continue-url": "/visits/visit-1/as/patient-lee",
            "data-texts": texts_for("device_check", language),
        }
        main = "<main id=\"device-check\" " + " ".join(
            f'{name}="{html.escape(value, quote=True)}"' for name, value in attributes.items()
        ) + "></main>"
        return HTMLResponse(page("Device check", main, "device-check.js", language))

    async def download(self, request: Request) -> Response:
        size = min(int(request.query_params.get("bytes", "1000000")), DOWNLOAD_LIMIT_BYTES)
        return Response(os.urandom(size), media_type="application/octet-stream",
                        headers={"Cache-Control": "no-store"})

    async def upload(self, request: Request) -> JSONResponse:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
        return JSONResponse({"received_bytes": received})

    async def share_file(self, request: Request) -> JSONResponse:
        visit_id = request.path_params["visit_id"]
        participant_id = request.query_params["participant"]
        if participant_id not in self.roster.get(visit_id, {}):
            return JSONResponse({"error": "NOT_PERMITTED"}, status_code=403)
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str)
        content = await upload.read()
        attachment_id = uuid.uuid4().hex
        filename = upload.filename or "file"
        content_type = upload.content_type or "application/octet-stream"
        self.attachments[attachment_id] = (filename, content_type, content)
        shared = SharedFile(attachment_id, filename, len(content), content_type,
                            f"/attachments/{attachment_id}")
        assert self.hub is not None
        await self.hub.announce_file(visit_id, participant_id, shared)
        return JSONResponse({"attachment_id": attachment_id}, status_code=201)

    async def attachment(self, request: Request) -> Response:
        _filename, content_type, content = self.attachments[request.path_params["attachment_id"]]
        return Response(content, media_type=content_type)

    async def signalling(self, websocket: WebSocket) -> None:
        assert self.hub is not None
        visit_id = websocket.path_params["visit_id"]
        participant_id = websocket.query_params.get("participant", "")
        await websocket.accept()

        async def send(event: dict[str, Any]) -> None:
            await websocket.send_text(json.dumps(event))

        try:
            connection = await self.hub.connect(visit_id, participant_id, send)
        except SignallingRefused:
            await websocket.close(code=4403)
            return
        self.sockets[participant_id] = websocket

        async def close_when_hub_closes() -> None:
            await connection.wait_closed()
            with suppress(RuntimeError):
                await websocket.close(code=4409)

        watcher = asyncio.create_task(close_when_hub_closes())
        try:
            while True:
                frame = await websocket.receive_text()
                await connection.receive(frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            watcher.cancel()
            if self.sockets.get(participant_id) is websocket:
                del self.sockets[participant_id]
            await connection.close()

    # ------------------------------------------------------------------ running

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(app: Starlette):
            self.loop = asyncio.get_running_loop()
            broker = self.broker_factory()
            self.hub = SignallingHub(broker, self.roster_lookup)
            try:
                yield
            finally:
                await self.hub.close()
                await broker.close()

        return Starlette(
            routes=[
                Route("/visits/{visit_id}/as/{participant_id}", self.visit_page),
                Route("/device-check", self.device_check_page),
                Route("/throughput/download", self.download),
                Route("/throughput/upload", self.upload, methods=["POST"]),
                Route("/visits/{visit_id}/files", self.share_file, methods=["POST"]),
                Route("/attachments/{attachment_id}", self.attachment),
                WebSocketRoute("/ws/visits/{visit_id}", self.signalling),
                Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
            ],
            lifespan=lifespan,
        )

    def start(self) -> VisitServer:
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the visit test server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)

    def call(self, coroutine: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the server's loop from the test thread."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def drop_socket(self, participant_id: str) -> None:
        """Cut a participant's signalling socket from the server side, as a network drop would."""
        websocket = self.sockets[participant_id]
        self.call(websocket.close(code=1012))
