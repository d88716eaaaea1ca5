"""A small OpenAI-compatible server on loopback that answers from a script of faults, for the client's
retry and error paths, the request-counting proxy in front of the real server, and the overhead bench.

Script actions, one per request in arrival order (then "ok" forever):
  "ok"        200 with a chat completion (from `answer(body)`, or forwarded to `upstream`)
  429 / 500   that status (429 with Retry-After: `retry_after`)
  "timeout"   wait `delay` seconds before answering, longer than the client waits
  "garbage"   200 with a body that is not JSON
  "empty"     200 with JSON that has no choices
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

ITEM = {"question": "What color is the ring?", "answer": "The ring is blue.", "short_answer": "blue",
        "options": ["blue", "red", "green", "yellow"], "correct": "A"}


def completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}


class FakeLLM:
    def __init__(self, script=(), answer=None, upstream: str | None = None, retry_after: str = "0", delay: float = 2.0):
        self.script = list(script)
        self.answer = answer or (lambda body: json.dumps(ITEM))
        self.upstream, self.retry_after, self.delay = upstream, retry_after, delay
        self.bodies: list[dict] = []  # every request received, in order
        self.headers: list[dict] = []
        self.received: list[str] = []  # hashes of the request bodies, in arrival order
        self.answered: list[str] = []  # hashes of the bodies answered with a completion
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None):
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # /v1/models
                self._send(200, json.dumps({"object": "list", "data": [{"id": "fake-vlm", "object": "model"}]}).encode())

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                with fake.lock:
                    fake.bodies.append(body)
                    fake.received.append(hashlib.sha256(raw).hexdigest())
                    fake.headers.append(dict(self.headers))
                    action = fake.script.pop(0) if fake.script else "ok"
                try:
                    if action == "ok":
                        if fake.upstream:
                            r = httpx.post(fake.upstream.rstrip("/") + "/chat/completions", json=body, timeout=600)
                            payload, status = r.content, r.status_code
                        else:
                            reply = fake.answer(body)  # the text of a completion, or a whole response (a dict)
                            payload, status = json.dumps(reply if isinstance(reply, dict) else completion(reply)).encode(), 200
                        if status == 200:
                            with fake.lock:
                                fake.answered.append(hashlib.sha256(raw).hexdigest())
                        self._send(status, payload)
                    elif action == "timeout":
                        time.sleep(fake.delay)
                        self._send(200, json.dumps(completion(fake.answer(body))).encode())
                    elif action == "garbage":
                        self._send(200, b"<html>502 Bad Gateway</html>")
                    elif action == "empty":
                        self._send(200, b'{"choices": []}')
                    else:
                        extra = {"Retry-After": fake.retry_after} if action == 429 else {}
                        self._send(int(action), json.dumps({"error": {"message": "injected"}}).encode(), extra)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
