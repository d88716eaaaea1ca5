"""A model behind an OpenAI-compatible server against the same model in process: evaluation throughput.

A small HTTP server on loopback serves the default tiny model (chat completions with the image as a
data URL, replies by greedy generation); the benchmark's questions are answered by letter once in
process (batched) and once through the server (this project's client, `--concurrency` requests at
once). Prints questions per second for both and their ratio, and checks the replies agree. The
server answers one request at a time, as the in-process path would without batching; a real server
(vLLM, LMDeploy) batches concurrent requests, so the served figure is a floor. Usage:

    python bench/served_eval.py [--questions 135] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image  # noqa: E402

from dataengine.benchmarks.answers import letter_prompt  # noqa: E402
from dataengine.benchmarks.seed import read_seed  # noqa: E402
from dataengine.config import RunConfig  # noqa: E402
from dataengine.images import load_image  # noqa: E402
from dataengine.models.served import load_served  # noqa: E402
from dataengine.models.tiny import build_tiny  # noqa: E402
from dataengine.records import Sample, read_jsonl  # noqa: E402
from dataengine.world.build import build_world, corpus  # noqa: E402
from _base import run  # noqa: E402


def serve(vlm):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _send(self, payload: dict):
            raw = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            self._send({"data": [{"id": "tiny"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            content = body["messages"][0]["content"]
            url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
            img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
            text = next(c["text"] for c in content if c["type"] == "text")
            with lock:
                [reply] = vlm.generate([(img, text)], max_new_tokens=body["max_tokens"])
            self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}],
                        "usage": {"prompt_tokens": 0, "completion_tokens": 0}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=135)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default="runs/bench-served")
    args = ap.parse_args()
    w = build_world(RunConfig(), f"{args.out}/world")
    vlm = build_tiny(corpus(read_jsonl(w.original, Sample)))
    qs = read_seed(w.benchmark)[:args.questions]
    items = [(load_image(w.image_root, q.image), letter_prompt(q)) for q in qs]

    vlm.generate(items[:16], max_new_tokens=8)  # warm up
    t0 = time.perf_counter()
    local = [r for i in range(0, len(items), 16) for r in vlm.generate(items[i:i + 16], max_new_tokens=8)]
    t_local = time.perf_counter() - t0

    server, url = serve(vlm)
    model = load_served(url, concurrency=args.concurrency)
    t0 = time.perf_counter()
    remote = model.generate(items, max_new_tokens=8)
    t_served = time.perf_counter() - t0
    server.shutdown()

    same = sum(a == b for a, b in zip(local, remote))
    print(f"in process (batches of 16) : {len(qs) / t_local:7.1f} questions/s")
    print(f"served (concurrency {args.concurrency:>2})     : {len(qs) / t_served:7.1f} questions/s")
    print(f"ratio served / in process  : {t_local / t_served:7.2f}")
    print(f"same reply                 : {same}/{len(qs)}")


if __name__ == "__main__":
    run(main)
