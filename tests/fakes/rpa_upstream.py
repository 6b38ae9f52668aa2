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
Steps may also be ``TIMEOUT`` / ``UNKNOWN`` and carry ``code`` and ``error``.
``duration`` instead of steps: PENDING until that many seconds after create,
then COMPLETED with ``{"completed_at": <epoch s>, "params": ...}`` and ``end_time`` set
- the benchmark measures delivery latency from ``completed_at``.  With ``sigma``, each
run's duration is drawn from a lognormal distribution with ``duration`` as its median.

Caller keys not configured see an older build that drops unknown body fields and
ignores ``?contract=1``.  :meth:`FakeUpstream.older_build` and :meth:`FakeUpstream.managed`
configure a key as another build; a managed build speaks the managed contract
(:mod:`tests.fakes.managed_platform`) with these extra create faults: ``lost_reply``
(accepted, then the connection is aborted; ``times``), ``client_offline``,
``protocol_unsupported``, ``workflow_not_found``, ``idempotency_conflict`` and
``refused`` (``code``).  ``cancel="unconfirmed"`` makes its cancels end UNKNOWN.

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

from tests.fakes import managed_platform as mp
from tests.fakes.managed_platform import Build
from tests.fakes.threaded import ThreadedServer

CREATE_PATH = "/api/rpa-openapi/workflows/execute-async"
QUERY_PATH = "/api/rpa-openapi/executions"
INTEGRATION_PATH = "/api/rpa-openapi/workflows/integration"
STOP_CURRENT_PATH = "/api/rpa-openapi/workflows/stop-current"


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
    cancel: str = "confirmed"  # or "unconfirmed": a managed cancel ends UNKNOWN


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
    managed: bool = False
    idempotency_key: str | None = None
    execution_timeout: int | None = None
    supports_cancel: bool = False
    cancel_requested: bool = False
    finished_at: float | None = None
    version: int = 1
    started_at: float | None = None
    final: dict[str, Any] | None = None  # the terminal state, once a query saw it
    last_step: dict[str, Any] | None = None  # the last non-fault step a query saw


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
        self._builds: dict[str, Build] = {}
        # (key, idempotency_key) -> (fingerprint, execution id)
        self._idempotency: dict[tuple[str, str], tuple[str, str]] = {}
        self._lost_replies: dict[tuple[str, str, str | None], int] = {}
        self.stop_current_calls: list[str | None] = []

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
        cancel: str = "confirmed",
    ) -> None:
        """``gated``: runs stay PENDING until :meth:`open_gate`, then follow the script."""
        gate = threading.Event() if gated else None
        steps = list(steps or [])
        with self._lock:
            self._scripts[project_id] = Script(create, steps, duration, gate, sigma, cancel)

    def older_build(self, token: str, refuses_unknown_fields: bool = False) -> None:
        """This key's platform has no managed contract; with ``refuses_unknown_fields`` a
        start holding a field it does not know gets a 422 (builds after the security change)."""
        with self._lock:
            self._integration.pop(token, None)
            self._builds[token] = Build(False, refuses_unknown_fields)

    def managed(
        self, token: str, client_state: str = "ready", supports_cancel: bool = True
    ) -> None:
        """This key's platform speaks the managed contract; its client is in ``client_state``
        (ready, offline, unconfirmed or unsupported).  Call again to change the client."""
        client = {
            "state": client_state,
            "protocol": 1 if client_state == "ready" else None,
            "supportsCancel": supports_cancel,
        }
        self.offer_contract(token, managed_contract(client=client))
        with self._lock:
            self._builds[token] = Build(True, True, client_state, supports_cancel)

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
        app.router.add_post(STOP_CURRENT_PATH, self._stop_current)
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

    def _build(self, token: str) -> Build | None:
        with self._lock:
            return self._builds.get(token)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        token = self._authorized(request)
        if token is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        raw = await request.read()
        body = await request.json()
        project_id = str(body.get("project_id"))
        with self._lock:
            self.creates.append(
                {
                    "body": body,
                    "at": time.time(),
                    "raw": raw,
                    "query": request.query_string,
                    "key": token,
                }
            )
            script = self._scripts.get(project_id, Script())
        build = self._build(token)
        if build is not None and build.managed:
            return await self._managed_create(request, token, body, build, script)
        if build is not None and build.refuses_unknown_fields:
            refusal = mp.unknown_field(body, mp.LEGACY_FIELDS)
            if refusal is not None:
                return refusal
        return await self._legacy_create(request, token, body, script)

    async def _legacy_create(
        self, request: web.Request, token: str, body: dict[str, Any], script: Script
    ) -> web.StreamResponse:
        create = script.create or {}
        reply: web.StreamResponse | None
        if script.create is not None:
            await asyncio.sleep(float(create.get("delay", 0)))  # a slow but good create
            if create.get("fault") in mp.NEW_CREATE_FAULTS:
                # An older build probes no client: only the reply-shaped faults apply.
                reply = mp.create_refusal(create, "ready", {})
            else:
                reply = await self._fault(request, create)
            if reply is not None:
                return reply
        run = self._new_run(token, body, script, uuid.uuid4().hex)
        with self._lock:
            self.runs[run.id] = run
        if self._loses_reply(token, body, create):
            self._abort(request)
        return _envelope({"executionId": run.id}, status=202)

    async def _managed_create(
        self,
        request: web.Request,
        token: str,
        body: dict[str, Any],
        build: Build,
        script: Script,
    ) -> web.StreamResponse:
        contract = _contract(request)
        if isinstance(contract, web.Response):
            return contract
        refusal = mp.invalid_managed_body(body)
        if refusal is not None:
            return refusal
        create = script.create or {}
        key = body.get("idempotency_key")
        if key is not None:
            repeat = self._repeat(token, key, body)
            if isinstance(repeat, web.Response):
                return repeat
            if repeat is not None:
                if self._loses_reply(token, body, create):
                    self._abort(request)
                return self._accepted(repeat, contract is True)
        if create.get("fault") is not None and create["fault"] not in mp.NEW_CREATE_FAULTS:
            await asyncio.sleep(float(create.get("delay", 0)))
            reply = await self._fault(request, create)
            assert reply is not None
            return reply
        refusal = mp.create_refusal(create, build.client_state, body)
        if refusal is not None:
            return refusal
        managed = mp.effective_client_state(create, build.client_state) == "ready"
        run = self._record(token, body, script, managed, build.supports_cancel)
        if self._loses_reply(token, body, create):
            self._abort(request)
        # Recorded before the wait, so a repeat sent meanwhile finds this run.
        await asyncio.sleep(float(create.get("delay", 0)))
        return self._accepted(run, contract is True)

    def _repeat(self, token: str, key: str, body: dict[str, Any]) -> FakeRun | web.Response | None:
        """The run an earlier start with this idempotency key made, a 403 when that start
        was another request, or None for a first start."""
        with self._lock:
            known = self._idempotency.get((token, key))
            if known is None:
                return None
            known_print, execution_id = known
            if known_print != mp.fingerprint(body):
                return mp.coded_error(403, "IDEMPOTENCY_CONFLICT")
            return self.runs[execution_id]

    def _record(
        self,
        token: str,
        body: dict[str, Any],
        script: Script,
        managed: bool,
        supports_cancel: bool,
    ) -> FakeRun:
        run = self._new_run(token, body, script, str(uuid.uuid4()))
        run.managed = managed
        run.supports_cancel = managed and supports_cancel
        run.idempotency_key = body.get("idempotency_key")
        run.execution_timeout = body.get("execution_timeout")
        run.version = body.get("version") or 1
        with self._lock:
            self.runs[run.id] = run
            if run.idempotency_key is not None:
                identity = (token, run.idempotency_key)
                self._idempotency[identity] = (mp.fingerprint(body), run.id)
        return run

    def _new_run(self, token: str, body: dict[str, Any], script: Script, fresh_id: str) -> FakeRun:
        run_id = (script.create or {}).get("execution_id") or fresh_id
        project_id = str(body.get("project_id"))
        run = FakeRun(run_id, project_id, body.get("params"), token, time.time(), script)
        if script.duration is not None:
            with self._lock:
                spread = self._random.gauss(0.0, script.sigma) if script.sigma else 0.0
            run.duration = script.duration * math.exp(spread)
        return run

    def _loses_reply(self, token: str, body: dict[str, Any], create: dict[str, Any]) -> bool:
        """Whether this attempt's reply is lost: the first ``times`` attempts of a key
        (without a key, of the project) under a ``lost_reply`` script."""
        if create.get("fault") != "lost_reply":
            return False
        attempt = (token, str(body.get("project_id")), body.get("idempotency_key"))
        with self._lock:
            self._lost_replies[attempt] = self._lost_replies.get(attempt, 0) + 1
            return self._lost_replies[attempt] <= int(create.get("times", 1))

    @staticmethod
    def _abort(request: web.Request) -> None:
        assert request.transport is not None
        request.transport.abort()
        raise web.HTTPInternalServerError()  # never written: the connection is gone

    def _accepted(self, run: FakeRun, contract: bool) -> web.Response:
        data: dict[str, Any] = {"executionId": run.id}
        if contract:
            data["snapshot"] = self._snapshot_now(run)
        return _envelope(data, status=202)

    # --- state --------------------------------------------------------------------
    def _observe(self, run: FakeRun) -> dict[str, Any]:
        """The script's step for the run's latest query (a fault step included)."""
        script = run.script
        if run.cancelled:
            return {"status": "CANCELLED", "error": "cancelled by request"}
        if script.gate is not None and not script.gate.is_set():
            return {"status": "PENDING"}
        if run.duration is not None:
            completed_at = run.created_at + run.duration
            if time.time() < completed_at:
                return {"status": "PENDING"}
            return {
                "status": "COMPLETED",
                "result": {"data": {"completed_at": completed_at, "params": run.params}},
                "end_time": completed_at,
            }
        if run.queries == 0:
            return {"status": "PENDING"}  # only a cancel or a repeated start looks this early
        if not script.steps:
            return {"status": "COMPLETED", "result": {"data": {"echo": run.params}}}
        return script.steps[min(run.queries, len(script.steps)) - 1]

    def _settled(self, run: FakeRun, step: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return mp.settle(run, step, run.script.cancel, time.time())

    def _snapshot_now(self, run: FakeRun) -> dict[str, Any]:
        """The snapshot without moving the script on (a fault step shows the last state)."""
        step = self._observe(run)
        if "fault" in step:
            step = run.last_step or {"status": "PENDING"}
        state = self._settled(run, step)
        with self._lock:
            return mp.snapshot(run, state)

    async def _query(self, request: web.Request) -> web.StreamResponse:
        token = self._authorized(request)
        if token is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        build = self._build(token)
        managed = build is not None and build.managed
        contract = _contract(request) if managed else False
        if isinstance(contract, web.Response):
            return contract
        execution_id = request.match_info["execution_id"]
        with self._lock:
            self.query_paths.append(request.raw_path)
            run = self.runs.get(execution_id)
            if run is not None:
                run.queries += 1
        if run is None and contract is True:
            return mp.coded_error(404, "EXECUTION_NOT_FOUND")
        if run is None:
            return _error(f"Execution with ID {execution_id} not found")
        step = self._observe(run)
        reply = await self._fault(request, step)
        if reply is not None:
            return reply
        run.last_step = step
        if not managed:
            self._note_finish(run, step)
            return self._execution(run, step)
        state = self._settled(run, step)
        if contract is True:
            with self._lock:
                return _envelope({"snapshot": mp.snapshot(run, state)})
        return self._execution(run, state, sanitize=True)

    def _note_finish(self, run: FakeRun, step: dict[str, Any]) -> None:
        if step["status"] in mp.TERMINAL_LEGACY and run.finished_at is None:
            run.finished_at = float(step.get("end_time") or time.time())

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        token = self._authorized(request)
        if token is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        execution_id = request.match_info["execution_id"]
        build = self._build(token)
        if build is not None and build.managed:
            return self._managed_cancel(execution_id)
        with self._lock:
            self.cancels.append(execution_id)
            run = self.runs.get(execution_id)
            if run is not None:
                run.cancelled = True
        return _envelope({"cancelled": run is not None})

    def _managed_cancel(self, execution_id: str) -> web.Response:
        with self._lock:
            self.cancels.append(execution_id)
            run = self.runs.get(execution_id)
        if run is None:
            return mp.coded_error(404, "EXECUTION_NOT_FOUND")
        if not (run.managed and run.supports_cancel):
            return mp.coded_error(403, "CANCEL_UNSUPPORTED")
        current = self._snapshot_now(run)
        if current["terminal"]:
            return _envelope({"snapshot": current})
        with self._lock:
            run.cancel_requested = True  # intent only: queries show the outcome
        return _envelope({"snapshot": {**current, "cancelRequested": True}})

    async def _stop_current(self, request: web.Request) -> web.Response:
        token = self._authorized(request)
        with self._lock:
            self.stop_current_calls.append(token)
        if token is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        return _envelope({"stopped": True})

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

    def _execution(
        self, run: FakeRun, step: dict[str, Any], *, sanitize: bool = False
    ) -> web.Response:
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
        if sanitize:
            execution = mp.sanitized(execution)
            execution["version"] = run.version
            if step["status"] in mp.TERMINAL_LEGACY:
                execution["end_time"] = execution["end_time"] or run.finished_at
        return _envelope({"execution": execution})

    async def _put_script(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.script(
            request.match_info["project_id"],
            create=body.get("create"),
            steps=body.get("steps"),
            duration=body.get("duration"),
            sigma=float(body.get("sigma", 0.0)),
            cancel=str(body.get("cancel", "confirmed")),
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


def _contract(request: web.Request) -> bool | web.Response:
    """Whether a managed build was asked for the contract view (only ``contract=1`` is valid)."""
    if "contract" not in request.query:
        return False
    if request.query["contract"] != "1":
        return mp.validation_error(["query", "contract"], "literal_error")
    return True


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
