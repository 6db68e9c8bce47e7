"""The providers' batch APIs, simulated: OpenAI files + batches, Anthropic message batches.

OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}/content``,
``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window = "24h"``),
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. A batch is ``validating``, then
``in_progress`` until ``batch_delay_s`` has passed, then ``completed`` with an output file
(succeeded lines) and an error file (refused lines). Limits as OpenAI's: 50,000 requests and
200 MB per input file, one model per file.

Anthropic: ``POST /v1/messages/batches`` (``requests: [{custom_id, params}]``, at most
100,000 and 256 MB), ``GET /v1/messages/batches/{id}``, ``GET …/{id}/results`` (JSONL of
``{custom_id, result: {type: succeeded|errored|expired|canceled, …}}``).

Test directives in an item's text: ``sim:batch_expire`` ends that item ``expired`` (OpenAI:
an error line with code ``batch_expired``), ``sim:reject`` refuses it like the online API,
``sim:batch_garbled`` answers it with a body no client can read (OpenAI: a 200 whose body is
not a completion; Anthropic: ``succeeded`` without its message).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from workers.devstack.simulator import wires
from workers.devstack.simulator.wires import Failure

if TYPE_CHECKING:
    from workers.devstack.simulator.server import SimulatorServer

OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_BYTES = 200 * 1024 * 1024
ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_MAX_BYTES = 256 * 1024 * 1024
EXPIRE_DIRECTIVE = "sim:batch_expire"
GARBLED_DIRECTIVE = "sim:batch_garbled"
_ENDPOINTS = {"/v1/chat/completions", "/v1/embeddings"}


@dataclass
class _OpenAIBatch:
    id: str
    input_file_id: str
    endpoint: str
    created_at: int
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    completed_at: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "expires_at": self.created_at + 86_400,
            "request_counts": dict(self.counts),
            "metadata": None,
        }


@dataclass
class _AnthropicBatch:
    id: str
    requests: list[dict[str, Any]]
    created_at: str
    status: str = "in_progress"
    ended_at: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.status != "ended":
            counts["processing"] = len(self.requests)
        for line in self.results:
            counts[line["result"]["type"]] += 1
        return counts

    def view(self, root: str) -> dict[str, Any]:
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "ended_at": self.ended_at,
            "created_at": self.created_at,
            "expires_at": self.created_at,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{root}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class BatchAPIs:
    """The simulator's batch state and endpoints (``sim.batch_apis``)."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.sim = sim
        self.files: dict[str, bytes] = {}
        self.openai: dict[str, _OpenAIBatch] = {}
        self.anthropic: dict[str, _AnthropicBatch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}/content", self.content)
        app.router.add_post("/v1/batches", self.create_openai)
        app.router.add_get("/v1/batches/{batch_id}", self.get_openai)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel_openai)
        app.router.add_post("/v1/messages/batches", self.create_anthropic)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.get_anthropic)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.results_anthropic)

    def _later(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _delay(self) -> float:
        return float(self.sim.config.batch_delay_s)

    # -- OpenAI files -------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not isinstance(upload, web.FileField):
            return wires.openai_error(
                self.sim.bad_request("a 'file' part and purpose=batch are required")
            )
        data = upload.file.read()
        if len(data) > OPENAI_MAX_BYTES:
            return wires.openai_error(self.sim.bad_request("the file is larger than 200 MB"))
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = data
        return web.json_response(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": upload.filename,
                "purpose": "batch",
            }
        )

    async def content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return wires.openai_error(Failure(404, "not_found", "No such File object"))
        return web.Response(body=data, content_type="application/jsonl")

    # -- OpenAI batches -----------------------------------------------------------------------

    async def create_openai(self, request: web.Request) -> web.Response:
        body = await request.json()
        file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
        if file_id not in self.files:
            return wires.openai_error(self.sim.bad_request(f"no file {file_id!r}"))
        if endpoint not in _ENDPOINTS or body.get("completion_window") != "24h":
            return wires.openai_error(
                self.sim.bad_request("endpoint must be a supported one and completion_window 24h")
            )
        lines = [json.loads(line) for line in self.files[file_id].decode().splitlines() if line]
        if len(lines) > OPENAI_MAX_REQUESTS:
            return wires.openai_error(self.sim.bad_request("more than 50,000 requests in the file"))
        batch = _OpenAIBatch(f"batch_{uuid.uuid4().hex[:24]}", file_id, endpoint, int(time.time()))
        batch.counts["total"] = len(lines)
        self.openai[batch.id] = batch
        self.sim.stats.batches += 1
        self._later(self._run_openai(batch, lines))
        return web.json_response(batch.view())

    async def get_openai(self, request: web.Request) -> web.Response:
        batch = self.openai.get(request.match_info["batch_id"])
        if batch is None:
            return wires.openai_error(Failure(404, "not_found", "No such Batch object"))
        return web.json_response(batch.view())

    async def cancel_openai(self, request: web.Request) -> web.Response:
        batch = self.openai.get(request.match_info["batch_id"])
        if batch is None:
            return wires.openai_error(Failure(404, "not_found", "No such Batch object"))
        if batch.status in ("validating", "in_progress"):
            batch.status = "cancelling"
        return web.json_response(batch.view())

    async def _run_openai(self, batch: _OpenAIBatch, lines: list[dict[str, Any]]) -> None:
        models = {line.get("body", {}).get("model") for line in lines}
        if len(models) > 1:
            batch.status = "failed"
            batch.errors = [{"code": "mixed_models", "message": "one model per batch file"}]
            return
        batch.status = "in_progress"
        await asyncio.sleep(self._delay())
        if batch.status == "cancelling":
            batch.status = "cancelled"
            return
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for line in lines:
            out = self._openai_line(batch.endpoint, line)
            succeeded = out["error"] is None and out["response"]["status_code"] == 200
            (output if succeeded else errors).append(out)
        batch.counts["completed"], batch.counts["failed"] = len(output), len(errors)
        batch.output_file_id = self._store(output)
        batch.error_file_id = self._store(errors) if errors else None
        batch.status, batch.completed_at = "completed", int(time.time())

    def _store(self, lines: list[dict[str, Any]]) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return file_id

    def _openai_line(self, endpoint: str, line: dict[str, Any]) -> dict[str, Any]:
        custom_id, body = line.get("custom_id"), line.get("body") or {}
        head = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id}
        if EXPIRE_DIRECTIVE in json.dumps(body):
            message = "This request could not be executed before the completion window expired."
            return {
                **head,
                "response": None,
                "error": {"code": "batch_expired", "message": message},
            }
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        if GARBLED_DIRECTIVE in json.dumps(body):
            self.sim.count_chat(str(body.get("model")), batch=True)
            garbled = {"object": "chat.completion", "choices": "garbled"}
            return {
                **head,
                "response": {"status_code": 200, "request_id": request_id, "body": garbled},
                "error": None,
            }
        if endpoint == "/v1/chat/completions":
            reply = wires.openai_chat_reply(self.sim, body, body.get("model"), batch=True)
        else:
            reply = wires.openai_embeddings_reply(self.sim, body, body.get("model"), batch=True)
        if isinstance(reply, Failure):
            error = {"message": reply.message, "type": "invalid_request_error", "code": reply.kind}
            response = {
                "status_code": reply.status,
                "request_id": request_id,
                "body": {"error": error},
            }
            return {**head, "response": response, "error": None}
        return {
            **head,
            "response": {"status_code": 200, "request_id": request_id, "body": reply},
            "error": None,
        }

    # -- Anthropic message batches ------------------------------------------------------------

    async def create_anthropic(self, request: web.Request) -> web.Response:
        if not request.headers.get("anthropic-version"):
            return wires.anthropic_error(
                Failure(400, "invalid_request_error", "anthropic-version: header is required")
            )
        raw = await request.read()
        if len(raw) > ANTHROPIC_MAX_BYTES:
            return wires.anthropic_error(self.sim.bad_request("the batch is larger than 256 MB"))
        requests = json.loads(raw).get("requests")
        if not isinstance(requests, list) or not 0 < len(requests) <= ANTHROPIC_MAX_REQUESTS:
            return wires.anthropic_error(self.sim.bad_request("requests: 1 to 100,000 items"))
        ids = [item.get("custom_id") for item in requests]
        if len(set(ids)) != len(ids):
            return wires.anthropic_error(self.sim.bad_request("requests: custom_id must be unique"))
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        batch = _AnthropicBatch(f"msgbatch_{uuid.uuid4().hex[:24]}", requests, now)
        self.anthropic[batch.id] = batch
        self.sim.stats.batches += 1
        self._later(self._run_anthropic(batch))
        return web.json_response(batch.view(self.sim.root_url))

    async def get_anthropic(self, request: web.Request) -> web.Response:
        batch = self.anthropic.get(request.match_info["batch_id"])
        if batch is None:
            return wires.anthropic_error(Failure(404, "not_found_error", "batch not found"))
        return web.json_response(batch.view(self.sim.root_url))

    async def results_anthropic(self, request: web.Request) -> web.Response:
        batch = self.anthropic.get(request.match_info["batch_id"])
        if batch is None or batch.status != "ended":
            return wires.anthropic_error(Failure(404, "not_found_error", "no results (yet)"))
        text = "".join(json.dumps(line) + "\n" for line in batch.results)
        return web.Response(text=text, content_type="application/binary")

    async def _run_anthropic(self, batch: _AnthropicBatch) -> None:
        await asyncio.sleep(self._delay())
        for item in batch.requests:
            params = item.get("params") or {}
            if EXPIRE_DIRECTIVE in json.dumps(params):
                result: dict[str, Any] = {"type": "expired"}
            elif GARBLED_DIRECTIVE in json.dumps(params):
                self.sim.count_chat(str(params.get("model")), batch=True)
                result = {"type": "succeeded"}  # its message missing
            else:
                reply = wires.anthropic_message_reply(self.sim, params, batch=True)
                if isinstance(reply, Failure):
                    error = {"type": "invalid_request_error", "message": reply.message}
                    result = {"type": "errored", "error": {"type": "error", "error": error}}
                else:
                    result = {"type": "succeeded", "message": reply}
            batch.results.append({"custom_id": item.get("custom_id"), "result": result})
        batch.status = "ended"
        batch.ended_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
