"""An OpenAI-compatible chat endpoint over a local model: the demo teacher, a trained cell to chat
with, or a model to rate. FastAPI + uvicorn; binds 127.0.0.1 unless told otherwise.

    python -m src.serve --model smollm2_135m                      # a conf/model name
    python -m src.serve --model runs/<run_id>/checkpoint --port 8001 --api-key-env SERVE_KEY
    python -m src.serve --model smollm2_135m --max-batch 1        # one request at a time
    curl -s 127.0.0.1:8000/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "smollm2_135m", "messages": [{"role": "user", "content": "Hi"}]}'

Routes: GET /v1/models, POST /v1/chat/completions (messages with text content or text parts;
max_tokens or max_completion_tokens, temperature, top_p, n, stop, seed, stream, stream_options).
Bad requests are 400 in OpenAI's error shape (src/teacher/serve_request.py); requests that arrive
together are generated in one batch, and beyond a bounded queue the answer is 429 with Retry-After
(src/teacher/serve_batcher.py). Any model name is accepted: the server serves one model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import socket
import threading
import time
import uuid

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from src.store import default_cache_dir
from src.teacher.clients import ChatResult, Sampling, count_prompt_tokens, load_local_handle, local_generate
from src.teacher.serve_batcher import Batcher, Generate, ServerBusy
from src.teacher.serve_request import MAX_BODY_BYTES, ChatJob, RequestProblem, parse_chat_body

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
DISCONNECT_POLL_S = 0.1  # how often a waiting request checks that its client is still there


def model_context(handle) -> int:
    """Prompt plus reply tokens the model can attend to."""
    return int(getattr(handle.model.config, "max_position_embeddings", None) or 2048)


def build_app(handle, model_name: str, api_key: str | None = None, max_tokens_cap: int = 2048,
              max_batch: int = 8, max_queue: int = 64, window_s: float = 0.05,
              generate: Generate | None = None) -> FastAPI:
    """The app; `generate` (rows, sampling) -> results defaults to local_generate on the handle."""
    app = FastAPI(title="imitation-gap local teacher")
    created = int(time.time())
    context = model_context(handle)
    generate = generate or (lambda rows, sampling: local_generate(handle, rows, sampling))
    batcher = Batcher(generate, max_batch=max_batch,
                      max_queue=max_queue, window_s=window_s)
    app.state.batcher = batcher  # tests and the bench read its stats
    app.router.add_event_handler("shutdown", batcher.close)

    def check_key(request: Request) -> None:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    @app.exception_handler(HTTPException)
    async def openai_error(_request, exc: HTTPException):  # the OpenAI error shape clients parse
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        return JSONResponse(status_code=exc.status_code,
                            content={"error": {"message": str(exc.detail), "type": kind, "param": None,
                                               "code": None}})

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    def models():
        return {"object": "list",
                "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "imitation-gap"}]}

    def problem(err: RequestProblem) -> JSONResponse:
        return JSONResponse(status_code=err.status, content=err.body())

    def settle(job: ChatJob) -> tuple[int, Sampling]:
        """Prompt tokens and the sampling to generate with: max_tokens capped at the model's context."""
        try:
            prompt_tokens = count_prompt_tokens(handle, job.messages)
        except ValueError as err:  # a message sequence the chat template refuses
            raise RequestProblem(f"Invalid value for 'messages': {err}", "messages", "invalid_value") from err
        room = min(context, handle.tokenizer.model_max_length or context) - prompt_tokens
        if room < 1:
            raise RequestProblem(f"This model's maximum context length is {context} tokens. However, your "
                                 f"messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                                 "the messages.", "messages", "context_length_exceeded")
        max_tokens = min(job.max_tokens or DEFAULT_MAX_TOKENS, max_tokens_cap, room)
        return prompt_tokens, Sampling(max_tokens=max_tokens, temperature=job.temperature, top_p=job.top_p,
                                       stop=job.stop, seed=job.seed)

    async def answered(request: Request, future) -> list[ChatResult] | None:
        """The batch's results for this request; None when its client went away first."""
        waiting = asyncio.wrap_future(future)
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
                if done:
                    return waiting.result()
                if await request.is_disconnected():
                    future.cancel()  # still queued: its place is freed; generating: its answer is dropped
                    return None
        except asyncio.CancelledError:  # the handler itself was cancelled (server shutdown): free the place too
            future.cancel()
            raise

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(request: Request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return problem(RequestProblem(f"The request body is over {MAX_BODY_BYTES} bytes.", None,
                                          "body_too_large", status=413))
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return problem(RequestProblem(f"The request body is over {MAX_BODY_BYTES} bytes.", None,
                                              "body_too_large", status=413))
        try:
            job = parse_chat_body(bytes(raw))
            prompt_tokens, sampling = await run_in_threadpool(settle, job)
        except RequestProblem as err:
            return problem(err)
        # Greedy choices are all the same reply: generate it once. Sampled ones are n rows.
        rows = [list(job.messages)] * (job.n if sampling.temperature > 0 else 1)
        try:
            future = batcher.submit(rows, sampling, alone=sampling.temperature > 0 and sampling.seed is not None)
        except ServerBusy as busy:
            headers = {"Retry-After": str(math.ceil(busy.retry_after))}  # whole seconds, as HTTP has it
            return JSONResponse(status_code=429, headers=headers,
                                content={"error": {"message": str(busy), "type": "rate_limit_error",
                                                   "param": None, "code": "server_busy"}})
        try:
            results = await answered(request, future)
        except Exception:  # logged once by the batcher
            return JSONResponse(status_code=500, content={"error": {
                "message": "the server failed to generate a reply (see its log)", "type": "server_error",
                "param": None, "code": None}})
        if results is None:
            return JSONResponse(status_code=499, content={"error": {"message": "client closed the request",
                                                                    "type": "invalid_request_error"}})
        if len(results) < job.n:
            results = results * job.n
        reply_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        completion_tokens = sum(r.completion_tokens for r in results)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if job.stream:
            return StreamingResponse(_events(reply_id, model_name, results, usage if job.include_usage else None),
                                     media_type="text/event-stream")
        return {"id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": model_name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": r.text},
                             "logprobs": None, "finish_reason": r.finish_reason} for i, r in enumerate(results)],
                "usage": usage}

    return app


def _events(reply_id: str, model_name: str, results: list[ChatResult], usage: dict | None):
    """Server-sent events of replies generated whole in their batch: tokens do not arrive one by one."""
    base = {"id": reply_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model_name}
    for index, result in enumerate(results):
        for delta, finish in (({"role": "assistant", "content": result.text}, None), ({}, result.finish_reason)):
            chunk = dict(base, choices=[{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}])
            yield f"data: {json.dumps(chunk)}\n\n"
    if usage is not None:  # stream_options.include_usage: one last chunk with no choices
        yield f"data: {json.dumps(dict(base, choices=[], usage=usage))}\n\n"
    yield "data: [DONE]\n\n"


class ServerThread:
    """An app under uvicorn in a thread of this process, on a free loopback port (tests, the bench):
    `with ServerThread(app) as server: ... server.url` is the /v1 base URL."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from src.models.load import pick_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a conf/model name or a checkpoint directory")
    parser.add_argument("--name", help="the model id clients send and /v1/models lists (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 keeps it off the network")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key-env", help="require 'Authorization: Bearer $VAR' when this variable is set")
    parser.add_argument("--cache-dir", default=default_cache_dir())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="rows generated together (1: one request at a time, the server before batching)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond this get 429")
    parser.add_argument("--batch-window", type=float, default=0.05,
                        help="seconds an idle server waits for requests to share a batch with")
    parser.add_argument("--max-tokens-cap", type=int, default=2048, help="no reply is longer than this")
    args = parser.parse_args(argv)
    if args.max_batch < 1 or args.max_queue < 1 or args.batch_window < 0 or args.max_tokens_cap < 1:
        parser.exit(2, "error: --max-batch, --max-queue and --max-tokens-cap must be >= 1, --batch-window >= 0\n")
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        parser.exit(2, f"error: --api-key-env {args.api_key_env} is not set\n")
    handle = load_local_handle(args.model, args.cache_dir, pick_device(args.device))
    app = build_app(handle, args.name or args.model, api_key=api_key, max_tokens_cap=args.max_tokens_cap,
                    max_batch=args.max_batch, max_queue=args.max_queue, window_s=args.batch_window)
    # Connections beyond this are answered 503 by uvicorn before their bodies are read (memory bound).
    limit = max(256, 2 * (args.max_queue + args.max_batch))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", limit_concurrency=limit)


if __name__ == "__main__":
    main()
