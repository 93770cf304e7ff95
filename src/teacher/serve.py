"""An OpenAI-compatible chat endpoint over a local model: the demo teacher, a trained cell to chat
with, or a model to rate. FastAPI + uvicorn; binds 127.0.0.1 unless told otherwise.

    python -m src.serve --model smollm2_135m                      # a conf/model name
    python -m src.serve --model runs/<run_id>/checkpoint --port 8001 --api-key-env SERVE_KEY
    curl -s 127.0.0.1:8000/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "smollm2_135m", "messages": [{"role": "user", "content": "Hi"}]}'

Routes: GET /v1/models, POST /v1/chat/completions (max_tokens, temperature, stop, seed, stream).
One model, one request at a time (a lock): generation on 2 CPU cores gains nothing from overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from src.store import default_cache_dir
from src.teacher.clients import Sampling, load_local_handle, local_generate

DEFAULT_MAX_TOKENS = 256


def build_app(handle, model_name: str, api_key: str | None = None, max_tokens_cap: int = 2048):
    app = FastAPI(title="imitation-gap local teacher")
    lock = threading.Lock()
    created = int(time.time())

    def check_key(request: Request) -> None:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    @app.exception_handler(HTTPException)
    async def openai_error(_request, exc: HTTPException):  # the OpenAI error shape clients parse
        return JSONResponse(status_code=exc.status_code,
                            content={"error": {"message": str(exc.detail), "type": "invalid_request_error"}})

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    def models():
        return {"object": "list",
                "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "imitation-gap"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    def chat_completions(body: dict):  # sync: FastAPI runs it in a worker thread, the lock serializes
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in messages):
            raise HTTPException(status_code=400, detail="messages: a non-empty list of {role, content} is needed")
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        try:
            sampling = Sampling(max_tokens=min(int(body.get("max_tokens") or DEFAULT_MAX_TOKENS), max_tokens_cap),
                                temperature=float(body.get("temperature") or 0.0), stop=stop,
                                seed=int(body.get("seed") or 0))
        except (TypeError, ValueError) as err:
            raise HTTPException(status_code=400, detail=f"bad sampling setting: {err}") from err
        with lock:
            result = local_generate(handle, [messages], sampling)[0]
        reply_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                 "total_tokens": result.prompt_tokens + result.completion_tokens}
        if body.get("stream"):
            # Generated whole, then sent as SSE chunks: clients that insist on streaming still work.
            def events():
                base = {"id": reply_id, "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": model_name}
                for delta, finish in (({"role": "assistant", "content": result.text}, None),
                                      ({}, result.finish_reason)):
                    chunk = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {"id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": result.finish_reason}],
                "usage": usage}

    return app


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
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        parser.exit(2, f"error: --api-key-env {args.api_key_env} is not set\n")
    handle = load_local_handle(args.model, args.cache_dir, pick_device(args.device))
    app = build_app(handle, args.name or args.model, api_key=api_key)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
