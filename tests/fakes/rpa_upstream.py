"""A scripted fake of the astron-rpa OpenAPI, served over real HTTP.

Each project can be given a script: what its create does, then one step per
query (the last step repeats).  Steps are replies (``{"status": "RUNNING"}``,
``{"status": "COMPLETED", "result": {...}}``) or faults:

- ``http500`` / ``html502``: an error status (the latter with an HTML page, as
  a proxy sends)
- ``malformed``: HTTP 200 with a body that is not JSON
- ``reset``: the connection is aborted without a reply
- ``slow``: the reply comes after ``seconds`` (longer than the client waits)
- ``code5001``: HTTP 200 with ``{"code": "5001"}`` (a lost execution)

A create script without a fault may name the ``execution_id`` to hand out, and a
``delay`` before it answers.
A gated script's runs report PENDING until the test opens the gate.
``duration`` instead of steps: PENDING until that many seconds after create,
then COMPLETED with ``{"completed_at": <epoch s>, "params": ...}`` and ``end_time`` set
- the benchmark measures delivery latency from ``completed_at``.  With ``sigma``, each
run's duration is drawn from a lognormal distribution with ``duration`` as its median.

Run in a thread (``FakeUpstream().start()``) by tests, or as a process
(``python -m tests.fakes.rpa_upstream --port N``) by the benchmark, which
scripts it through ``/_fake/*``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.threaded import ThreadedServer

CREATE_PATH = "/api/rpa-openapi/workflows/execute-async"
QUERY_PATH = "/api/rpa-openapi/executions"
INTEGRATION_PATH = "/api/rpa-openapi/workflows/integration"


def managed_contract(**changes: Any) -> dict[str, Any]:
    """What a managed build's discovery route says (``changes`` on top), as its sources do."""
    offer: dict[str, Any] = {
        "contractVersion": 1,
        "serviceVersion": "1.0.0+public-framework.1",
        "profileSchemaVersion": 1,
        "requiredClientProtocol": 1,
        "durableIdempotency": True,
        "operations": [
            "workflow_list",
            "workflow_get",
            "workflow_execute",
            "execution_get",
            "execution_cancel",
        ],
        "jsonLimits": {
            "maxBytes": 1048576,
            "maxDepth": 12,
            "maxObjectProperties": 200,
            "maxArrayItems": 1000,
            "maxStringLength": 100000,
        },
        "client": {"state": "ready", "protocol": 1, "supportsCancel": True},
    }
    return {**offer, **changes}


@dataclass
class Script:
    create: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    duration: float | None = None
    gate: threading.Event | None = None  # runs report PENDING until it is set
    sigma: float = 0.0  # spread of log(duration) across runs


@dataclass
class FakeRun:
    id: str
    project_id: str
    params: Any
    token: str
    created_at: float
    script: Script
    queries: int = 0
    cancelled: bool = False
    duration: float | None = None


def new_project_id() -> str:
    """A project id no other test uses, so the fake's counters are per test."""
    return f"p-{uuid.uuid4().hex[:8]}"


class FakeUpstream:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, Script] = {}
        self.runs: dict[str, FakeRun] = {}
        self.creates: list[dict[str, Any]] = []
        self.query_paths: list[str] = []
        self.cancels: list[str] = []
        self.authorizations: set[str] = set()
        self.traceparents: list[str] = []
        self.port = 0
        self._random = random.Random(13)
        # Per caller key: what the discovery route answers ((status, body)); others get the
        # 404 of an older build.  And how often each key asked.
        self._integration: dict[str, tuple[int, Any]] = {}
        self.discoveries: dict[str, int] = {}
        self.rejected: set[str] = set()  # keys answered 401, as a platform does a wrong key

    # --- scripting ------------------------------------------------------------
    def script(
        self,
        project_id: str,
        *,
        create: dict[str, Any] | None = None,
        steps: list[dict[str, Any]] | None = None,
        duration: float | None = None,
        gated: bool = False,
        sigma: float = 0.0,
    ) -> None:
        """``gated``: runs stay PENDING until :meth:`open_gate`, then follow the script."""
        gate = threading.Event() if gated else None
        with self._lock:
            self._scripts[project_id] = Script(create, list(steps or []), duration, gate, sigma)

    def offer_contract(self, token: str, data: Any = None, *, status: int = 200) -> None:
        """The discovery route, for this key: ``data`` in a success envelope (the
        :func:`managed_contract` when None), or ``status`` with a FastAPI-like body."""
        if status == 200:
            body: Any = {"code": "0000", "msg": "", "data": data or managed_contract()}
        else:
            body = {"detail": "Not Found" if status == 404 else "error"}
        with self._lock:
            self._integration[token] = (status, body)

    def open_gate(self, project_id: str) -> None:
        with self._lock:
            gate = self._scripts[project_id].gate
        assert gate is not None, f"{project_id} is not gated"
        gate.set()

    def creates_for(self, project_id: str) -> int:
        with self._lock:
            return sum(1 for c in self.creates if c["body"].get("project_id") == project_id)

    def wait_for_creates(self, project_id: str, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.creates_for(project_id) < count:
            assert time.monotonic() < deadline, f"{count} creates of {project_id} never came"
            time.sleep(0.01)

    def runs_for(self, project_id: str) -> list[FakeRun]:
        with self._lock:
            return [r for r in self.runs.values() if r.project_id == project_id]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "XIAOWU_RPA_TASK_CREATE_URL": self.base_url + CREATE_PATH,
            "XIAOWU_RPA_TASK_QUERY_URL": self.base_url + QUERY_PATH,
            "XIAOWU_RPA_TASK_CANCEL_URL": self.base_url + QUERY_PATH + "/{execution_id}/cancel",
        }

    # --- HTTP -------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(CREATE_PATH, self._create)
        app.router.add_get(QUERY_PATH + "/{execution_id}", self._query)
        app.router.add_post(QUERY_PATH + "/{execution_id}/cancel", self._cancel)
        app.router.add_get(INTEGRATION_PATH, self._integration_get)
        app.router.add_put("/_fake/projects/{project_id}", self._put_script)
        app.router.add_get("/_fake/stats", self._stats)
        return app

    def _authorized(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return None
        if header[7:] in self.rejected:
            return None
        with self._lock:
            self.authorizations.add(header)
            if "traceparent" in request.headers:
                self.traceparents.append(request.headers["traceparent"])
        return header[7:]

    async def _integration_get(self, request: web.Request) -> web.StreamResponse:
        token = self._authorized(request)
        if token is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        with self._lock:
            self.discoveries[token] = self.discoveries.get(token, 0) + 1
            status, body = self._integration.get(token, (404, {"detail": "Not Found"}))
        return web.json_response(body, status=status)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        token = self._authorized(request)
        if token is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        body = await request.json()
        project_id = str(body.get("project_id"))
        with self._lock:
            self.creates.append({"body": body, "at": time.time()})
            script = self._scripts.get(project_id, Script())
        if script.create is not None:
            await asyncio.sleep(float(script.create.get("delay", 0)))  # a slow but good create
            reply = await self._fault(request, script.create)
            if reply is not None:
                return reply
        run_id = (script.create or {}).get("execution_id") or uuid.uuid4().hex
        run = FakeRun(run_id, project_id, body.get("params"), token, time.time(), script)
        if script.duration is not None:
            with self._lock:
                spread = self._random.gauss(0.0, script.sigma) if script.sigma else 0.0
            run.duration = script.duration * math.exp(spread)
        with self._lock:
            self.runs[run.id] = run
        return _envelope({"executionId": run.id}, status=202)

    async def _query(self, request: web.Request) -> web.StreamResponse:
        if self._authorized(request) is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        execution_id = request.match_info["execution_id"]
        with self._lock:
            self.query_paths.append(request.raw_path)
            run = self.runs.get(execution_id)
            if run is not None:
                run.queries += 1
        if run is None:
            return _error(f"Execution with ID {execution_id} not found")
        if run.cancelled:
            return self._execution(run, {"status": "CANCELLED", "error": "cancelled by request"})
        script = run.script
        if script.gate is not None and not script.gate.is_set():
            return self._execution(run, {"status": "PENDING"})
        if run.duration is not None:
            completed_at = run.created_at + run.duration
            if time.time() < completed_at:
                return self._execution(run, {"status": "PENDING"})
            return self._execution(
                run,
                {
                    "status": "COMPLETED",
                    "result": {"data": {"completed_at": completed_at, "params": run.params}},
                    "end_time": completed_at,
                },
            )
        if not script.steps:
            return self._execution(
                run, {"status": "COMPLETED", "result": {"data": {"echo": run.params}}}
            )
        step = script.steps[min(run.queries, len(script.steps)) - 1]
        reply = await self._fault(request, step)
        return reply if reply is not None else self._execution(run, step)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        if self._authorized(request) is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        execution_id = request.match_info["execution_id"]
        with self._lock:
            self.cancels.append(execution_id)
            run = self.runs.get(execution_id)
            if run is not None:
                run.cancelled = True
        return _envelope({"cancelled": run is not None})

    async def _fault(self, request: web.Request, step: dict[str, Any]) -> web.StreamResponse | None:
        fault = step.get("fault")
        if fault is None:
            return None
        if fault == "http500":
            return web.Response(status=500, text="Internal Server Error")
        if fault == "html502":
            return web.Response(
                status=502,
                content_type="text/html",
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
        if fault == "malformed":
            return web.Response(status=200, content_type="application/json", text='{"code": "00')
        if fault == "code5001":
            return _error(step.get("msg", "Execution not found"))
        if fault == "slow":
            await asyncio.sleep(float(step.get("seconds", 5)))
            return _envelope({"executionId": uuid.uuid4().hex})
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise web.HTTPInternalServerError()  # never written: the connection is gone
        if fault == "unauthorized":
            return web.json_response({"detail": "Invalid API key"}, status=401)
        raise ValueError(f"unknown fault {fault!r}")

    def _execution(self, run: FakeRun, step: dict[str, Any]) -> web.Response:
        execution = {
            "id": run.id,
            "project_id": run.project_id,
            "status": step["status"],
            "parameters": run.params,
            "result": step.get("result"),
            "error": step.get("error"),
            "exec_position": "EXECUTOR",
            "user_id": "u1",
            "start_time": run.created_at,
            "end_time": step.get("end_time"),
        }
        return _envelope({"execution": execution})

    async def _put_script(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.script(
            request.match_info["project_id"],
            create=body.get("create"),
            steps=body.get("steps"),
            duration=body.get("duration"),
            sigma=float(body.get("sigma", 0.0)),
        )
        return web.json_response({"ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response(
                {
                    "creates": len(self.creates),
                    "runs": len(self.runs),
                    "cancels": len(self.cancels),
                    "queries": len(self.query_paths),
                }
            )

    # --- lifecycle ----------------------------------------------------------------
    def start(self, port: int = 0) -> FakeUpstream:
        self._server = ThreadedServer(self.app(), port)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        self._server.stop()


def _envelope(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"code": "0000", "msg": "", "data": data}, status=status)


def _error(message: str) -> web.Response:
    return web.json_response({"code": "5001", "msg": message, "data": None})


def main() -> None:
    parser = argparse.ArgumentParser(description="scripted fake RPA OpenAPI")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    fake = FakeUpstream()
    web.run_app(
        fake.app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=lambda *_: print(json.dumps({"port": args.port}), flush=True),
    )


if __name__ == "__main__":
    main()
