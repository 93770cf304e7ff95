"""Servers on 127.0.0.1 for the collection tests: the real src.serve app in a thread, and a
fault-injecting OpenAI-shaped endpoint whose faults are named in the prompt text.

Fault tags in the last user message (the counts are per prompt text, over the server's life):
  [500xN]      the first N requests answer HTTP 500, then a normal reply
  [429xN]      the first N requests answer HTTP 429 (Retry-After: 0)
  [timeoutxN]  the first N requests hang until the server stops (the client times out)
  [malformed]  200 with a body that is not JSON        [nochoices]  200 JSON without 'choices'
  [empty]      200 with empty content                  [400]        HTTP 400, not retryable
Anything else is answered "echo: <prompt>" with usage 10 prompt / 5 completion tokens.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from src.teacher.serve import ServerThread

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class FaultServer:
    def __init__(self, delay: float = 0.0, responder=None):
        self.delay = delay  # seconds before every reply (lets a test kill a client mid-run)
        self.responder = responder or (lambda prompt: f"echo: {prompt}")
        self.requests: Counter[str] = Counter()  # per last user message
        self.prompts: list[str] = []
        self.bodies: list[dict] = []  # every request body, in arrival order
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet test output
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.requests[prompt] += 1
                    server.prompts.append(prompt)
                    server.bodies.append(body)
                    seen = server.requests[prompt]
                if server.delay:
                    server.stopping.wait(server.delay)
                server.respond(self, prompt, seen)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def respond(self, handler, prompt: str, seen: int) -> None:
        def send(status: int, payload: bytes, headers: dict | None = None) -> None:
            try:
                handler.send_response(status)
                for key, value in (headers or {}).items():
                    handler.send_header(key, value)
                handler.send_header("content-length", str(len(payload)))
                handler.end_headers()
                handler.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        for tag, status in (("500", 500), ("429", 429), ("timeout", 0)):
            match = re.search(rf"\[{tag}x(\d+)\]", prompt)
            if match and seen <= int(match[1]):
                if status == 0:
                    self.stopping.wait(30)  # hang: the client's timeout fires first
                    return
                send(status, b'{"error": {"message": "injected"}}', {"retry-after": "0"} if status == 429 else None)
                return
        if "[malformed]" in prompt:
            send(200, b"<html>not json")
        elif "[nochoices]" in prompt:
            send(200, b'{"object": "chat.completion"}')
        elif "[400]" in prompt:
            send(400, b'{"error": {"message": "bad request"}}')
        else:
            text = "" if "[empty]" in prompt else self.responder(prompt)
            reply = {"id": "x", "object": "chat.completion", "model": "fault",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}], "usage": USAGE}
            send(200, json.dumps(reply).encode(), {"content-type": "application/json"})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


AppServer = ServerThread  # the real src.serve app under uvicorn in a thread, on a free loopback port


class VllmStandIn:
    """An endpoint answering in the shapes of vLLM's own OpenAI server (`vllm serve`): its extra
    fields (stop_reason, reasoning_content, tool_calls, prompt_logprobs, prompt_tokens_details) and
    its top-level error object {"object": "error", "message", "type", "param", "code"}. A prompt
    containing [long] is refused as vLLM refuses a prompt over the model's context; one containing
    [cut] ends by length."""

    def __init__(self):
        self.bodies: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stand_in.bodies.append(body)
                status, reply = stand_in.reply(body)
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def reply(self, body: dict) -> tuple[int, dict]:
        prompt = body["messages"][-1]["content"]
        if "[long]" in prompt:
            return 400, {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
                         "message": "This model's maximum context length is 2048 tokens. However, you requested "
                                    "2300 tokens (2044 in the messages, 256 in the completion). Please reduce the "
                                    "length of the messages or completion."}
        cut = "[cut]" in prompt
        completion = body.get("max_tokens", 16) if cut else 3
        return 200, {
            "id": "chatcmpl-7c9e0a5b3f1d4e2a8b6c0d9e1f2a3b4c", "object": "chat.completion", "created": 1730000000,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "reasoning_content": None,
                                                 "content": f"vllm says: {prompt}", "tool_calls": []},
                         "logprobs": None, "finish_reason": "length" if cut else "stop",
                         "stop_reason": None if cut else 128009}],
            "usage": {"prompt_tokens": 12, "total_tokens": 12 + completion, "completion_tokens": completion,
                      "prompt_tokens_details": None},
            "prompt_logprobs": None, "kv_transfer_params": None}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
