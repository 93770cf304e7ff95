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
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class FaultServer:
    def __init__(self, delay: float = 0.0, responder=None):
        self.delay = delay  # seconds before every reply (lets a test kill a client mid-run)
        self.responder = responder or (lambda prompt: f"echo: {prompt}")
        self.requests: Counter[str] = Counter()  # per last user message
        self.prompts: list[str] = []
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


class AppServer:
    """A FastAPI app under uvicorn in a thread, on a free loopback port."""

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
