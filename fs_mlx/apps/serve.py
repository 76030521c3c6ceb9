"""`fsx serve`: the HTTP side of the server (Starlette routes, served by uvicorn).

    GET  /                      the chat page (static/chat.html: one file, no CDN)
    GET  /health                {"status": "ok", waiting/running counts}
    GET  /v1/models             the one model this server holds
    POST /v1/chat/completions   OpenAI chat completions, streamed as server-sent events or not
    POST /v1/completions        OpenAI (legacy) completions, likewise

A request's life: the body is checked (openai_api.py: a 4xx with OpenAI's
error JSON if anything is wrong), submitted to the scheduler
(generation/batch.py), whose thread calls back with one event per token.
The callback hands each event to this request's asyncio queue on the event
loop; the handler turns events into SSE chunks (or one JSON object at the
end). A client that disconnects cancels its sequence, which frees its rows
of the batch at the next step.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import FsxError
from ..generation.batch import Busy, Event, Scheduler
from .openai_api import ApiError, Reply, Settings, parse_chat, parse_completion

log = logging.getLogger("fs_mlx.serve")
CHAT_PAGE = Path(__file__).parent / "static" / "chat.html"
MAX_BODY = 8 << 20  # bytes: a request body larger than this is refused (413)
RETRY_AFTER_S = 1  # what a client told "busy" should wait before trying again
DISCONNECT_CHECK_S = 0.5  # how often a non-streaming request looks for a closed connection


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def read_json(request: HttpRequest) -> dict:
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY >> 20} MB")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def sse(obj: dict | str) -> str:
    """One server-sent event: `data: <json>` and a blank line."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(scheduler: Scheduler, settings: Settings) -> Starlette:
    """The ASGI app around a started (or about to start) scheduler."""

    async def completions(request: HttpRequest, kind: str) -> Response:
        try:
            body = await read_json(request)
            parsed = (parse_chat if kind == "chat" else parse_completion)(body, settings)
        except ApiError as e:
            log.info("%s %s: %d %s", request.method, request.url.path, e.status, e.message)
            return error_response(e)

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(e: Event) -> None:  # called in the scheduler thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, e)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                pass

        try:
            seq = scheduler.submit(parsed.request, emit)
        except Busy as e:
            return error_response(ApiError(429, str(e), code="rate_limit_exceeded", type="server_busy",
                                           headers={"Retry-After": str(RETRY_AFTER_S)}))
        except FsxError as e:
            return error_response(ApiError(400, str(e)))
        reply = Reply(kind, settings.model_id, settings.tokenizer, parsed.logprobs, parsed.include_usage)
        if parsed.stream:
            return StreamingResponse(stream(seq, events, reply), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await collect(request, seq, events, reply)

    async def stream(seq, events: asyncio.Queue, reply: Reply):
        finished = False
        try:
            while not finished:
                e = await events.get()
                finished = e.finish_reason is not None
                if e.finish_reason == "error":
                    yield sse(ApiError(500, f"generation failed: {e.error}", type="server_error").body())
                    break
                for chunk in reply.chunk(e):
                    yield sse(chunk)
            yield sse("[DONE]")
        finally:
            if not finished:  # the client went away (the response was cancelled): free its sequence
                scheduler.cancel(seq)

    async def collect(request: HttpRequest, seq, events: asyncio.Queue, reply: Reply) -> Response:
        loop = asyncio.get_running_loop()
        checked = loop.time()
        try:
            while True:
                try:
                    e = await asyncio.wait_for(events.get(), timeout=DISCONNECT_CHECK_S)
                except asyncio.TimeoutError:
                    e = None
                if loop.time() - checked >= DISCONNECT_CHECK_S:  # is anyone still waiting for this?
                    checked = loop.time()
                    if await request.is_disconnected():
                        scheduler.cancel(seq)
                        return Response(status_code=499)  # nobody reads it; nginx's "client closed"
                if e is None:
                    continue
                if e.finish_reason == "error":
                    return error_response(ApiError(500, f"generation failed: {e.error}", type="server_error"))
                reply.add(e)
                if e.finish_reason:
                    return JSONResponse(reply.response(e))
        except asyncio.CancelledError:
            scheduler.cancel(seq)
            raise

    async def chat_completions(request: HttpRequest) -> Response:
        return await completions(request, "chat")

    async def text_completions(request: HttpRequest) -> Response:
        return await completions(request, "text")

    async def models(request: HttpRequest) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": settings.model_id, "object": "model", "created": 0, "owned_by": "fs-mlx",
             "context_length": settings.context}]})

    async def health(request: HttpRequest) -> Response:
        return JSONResponse({"status": "ok", **scheduler.load})

    async def chat_page(request: HttpRequest) -> Response:
        return HTMLResponse(CHAT_PAGE.read_text(encoding="utf-8"))

    async def not_found(request: HttpRequest, exc) -> Response:
        return error_response(ApiError(404, f"no route {request.method} {request.url.path}", code="not_found"))

    async def method_not_allowed(request: HttpRequest, exc) -> Response:
        return error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}"))

    async def internal_error(request: HttpRequest, exc) -> Response:
        log.exception("internal error on %s", request.url.path)
        return error_response(ApiError(500, "internal server error", type="server_error"))

    routes = [
        Route("/", chat_page),
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", text_completions, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: method_not_allowed,
                                                        Exception: internal_error})


def serve(lm, model_id: str, host: str = "127.0.0.1", port: int = 8080, *, max_batch: int = 8,
          max_queue: int = 64, context: int | None = None, default_max_tokens: int = 2048,
          prefill_chunk: int = 512, prefix_cache_mb: int = 512, sampling_defaults: dict | None = None,
          log_level: str = "info") -> None:
    """Run the server until Ctrl-C."""
    import uvicorn

    scheduler, settings = make_scheduler(lm, model_id, max_batch=max_batch, max_queue=max_queue,
                                         context=context, default_max_tokens=default_max_tokens,
                                         prefill_chunk=prefill_chunk, prefix_cache_mb=prefix_cache_mb,
                                         sampling_defaults=sampling_defaults)
    scheduler.start()
    try:
        uvicorn.run(create_app(scheduler, settings), host=host, port=port, log_level=log_level)
    finally:
        scheduler.stop()


def make_scheduler(lm, model_id: str, *, max_batch: int = 8, max_queue: int = 64, context: int | None = None,
                   default_max_tokens: int = 2048, prefill_chunk: int = 512, prefix_cache_mb: int = 512,
                   sampling_defaults: dict | None = None) -> tuple[Scheduler, Settings]:
    scheduler = Scheduler(lm, max_batch=max_batch, max_queue=max_queue, prefill_chunk=prefill_chunk,
                          prefix_cache_bytes=prefix_cache_mb << 20, context=context)
    settings = Settings(model_id, lm.tokenizer, scheduler.context, default_max_tokens, sampling_defaults or {})
    return scheduler, settings
