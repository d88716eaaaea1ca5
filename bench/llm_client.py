"""Client overhead: items per second against a local server that answers instantly, at concurrency 1,
8 and 64, for the data engine's client (retries, rate limiter, SQLite cache, usage) and for a bare
httpx loop sending the same requests. A ratio near 1 means the client adds nothing that matters;
the absolute rate says how far it is from being the bottleneck for a real LLM.

    python bench/llm_client.py [--n 600]

Needs the llm extra (uvicorn/starlette come with llama-cpp-python[server]).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dataengine.llm.client import LLMClient, LLMConfig  # noqa: E402
from _base import run  # noqa: E402

ANSWER = json.dumps({"id": "x", "object": "chat.completion", "model": "instant",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"question": "q"}'}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}).encode()


def serve(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def chat(request):
        await request.body()
        return Response(ANSWER, media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def bare(url: str, bodies: list[dict], concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        async def one(b):
            async with sem:
                r = await http.post(url + "/chat/completions", json=b)
                r.json()["choices"][0]["message"]["content"]
        await asyncio.gather(*(one(b) for b in bodies))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600, help="requests per measurement")
    args = ap.parse_args()
    port = free_port()
    proc = mp.Process(target=serve, args=(port,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(100):
        try:
            httpx.post(url + "/chat/completions", json={}, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    rows = []
    try:
        for conc in (1, 8, 64):
            msgs = lambda i: [{"role": "user", "content": f"item {i} " + "annotation text " * 40}]  # noqa: E731
            with tempfile.TemporaryDirectory() as tmp:
                client = LLMClient(LLMConfig(base_urls=[url], concurrency=conc), cache_path=Path(tmp) / "cache.sqlite")
                bodies = [client.body(msgs(i), {"type": "object"}, seed=i) for i in range(args.n)]
                t = time.perf_counter()
                out = client.run(bodies)
                ours = args.n / (time.perf_counter() - t)
                assert all(not isinstance(o, Exception) for o in out) and client.usage.requests == args.n
                t = time.perf_counter()
                client.run(bodies)
                cached = args.n / (time.perf_counter() - t)
                client.close()
            t = time.perf_counter()
            asyncio.run(bare(url, [dict(b, seed=b["seed"] + 10**6) for b in bodies], conc))
            base = args.n / (time.perf_counter() - t)
            rows.append((conc, ours, base, cached))
    finally:
        proc.terminate()
    print(f"{args.n} requests each; items per second (instant local server, same machine)")
    print(f"{'concurrency':>11} {'client':>9} {'bare httpx':>11} {'client/bare':>12} {'cached re-run':>14}")
    for conc, ours, base, cached in rows:
        print(f"{conc:>11} {ours:>9.0f} {base:>11.0f} {ours / base:>12.2f} {cached:>14.0f}")


if __name__ == "__main__":
    run(main)
