"""Against the real small LLM: the packaged Gemma-3-270M on a llama.cpp server started by the tool."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from dataengine.config import IPOConfig
from dataengine.generate import LLMGenerator
from dataengine.llm.client import LLMClient, LLMConfig
from dataengine.llm.prompt import prompt_for
from dataengine.llm.server import LocalLLM, local_config
from dataengine.loop import Loop
from dataengine.records import ImageAnnotation, Sample, read_jsonl
from dataengine.sample import Plan, TypePlan
from tests.support.configs import small_config
from tests.support.fake_llm import FakeLLM

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalLLM(tmp_path_factory.mktemp("llm") / "server.log") as url:
        yield url


def test_real_llm_writes_items_and_the_cache_answers_a_rerun(server, world, tmp_path):
    pool = [a for a in read_jsonl(world.pool, ImageAnnotation) if a.texts][:2]
    cfg = local_config(LLMConfig(base_urls=[server]))
    first = LLMClient(cfg, cache_path=tmp_path / "cache.sqlite")
    gen = LLMGenerator(first, prompt_for(None))
    items = gen.generate_batch(9, pool, [], None) + gen.generate_batch(3, pool, [], None)
    assert first.usage.requests == 4 and first.usage.completion_tokens > 0
    assert items, gen.problems  # the grammar makes the small base model answer in the item shape
    for s in items:
        assert len(s.options) == 4 and s.choice_answer in "ABCD" and s.generator == "llm:gemma-3-270m:prompt-v1"
    first.close()
    again = LLMClient(cfg, cache_path=tmp_path / "cache.sqlite")
    gen2 = LLMGenerator(again, prompt_for(None))
    items2 = gen2.generate_batch(9, pool, [], None) + gen2.generate_batch(3, pool, [], None)
    assert again.usage.requests == 0 and again.usage.cached == 4
    assert [s.model_dump() for s in items2] == [s.model_dump() for s in items]


def _cached(path) -> set[str]:
    """The request keys a client's cache holds (empty before it exists)."""
    import sqlite3
    if not path.exists():
        return set()
    db = sqlite3.connect(path)
    try:
        return {k for (k,) in db.execute("SELECT key FROM calls")}
    except sqlite3.OperationalError:  # the table is not made yet
        return set()
    finally:
        db.close()


def test_killed_generate_resumes_without_repeating_a_call(server, world, tmp_path):
    """SIGKILL `dataengine generate` after two answered calls; the re-run repeats none (counted at a proxy)."""
    secret = "sk-never-written-7d1f0b"
    plan = Plan(strategy="sqrt-error", budget=6, types={
        t: TypePlan(qtype=t, name=str(t), accuracy=0.3, ratio=0.5, count=3, examples=[]) for t in (3, 9)})
    (tmp_path / "plan.json").write_text(plan.model_dump_json())
    with FakeLLM(upstream=server) as proxy:
        llm = local_config(LLMConfig()).model_dump() | {"base_urls": [proxy.url], "api_key_env": "DE_TEST_SECRET"}
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"llm": llm}))
        cmd = [sys.executable, "-m", "dataengine.cli", "generate", "--plan", str(tmp_path / "plan.json"),
               "--pool", str(world.pool), "--out", str(tmp_path / "gen.jsonl"), "--generator", "llm",
               "--config", str(tmp_path / "cfg.yaml"), "--max-images", "1"]
        env = os.environ | {"DE_TEST_SECRET": secret}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cache = tmp_path / "gen.llm_cache.sqlite"
        deadline = time.monotonic() + 300
        while len(_cached(cache)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        received_before = len(proxy.received)
        # what the killed run had kept: an answer that arrived but was not yet stored may be asked again
        kept = _cached(cache)
        finished = {h for h, body in zip(proxy.received, proxy.bodies) if LLMClient.key(body) in kept}
        assert 2 <= len(finished) < 6 and not (tmp_path / "gen.jsonl").exists()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, timeout=600)
    # No call whose answer the killed run kept is asked again.
    assert not set(proxy.received[received_before:]) & finished
    assert len(set(proxy.answered)) == 6
    assert all(h["Authorization"] == f"Bearer {secret}" for h in proxy.headers)
    report = json.loads((tmp_path / "gen.report.json").read_text())
    assert report["usage"]["cached"] >= len(finished) and report["usage"]["cached"] + report["usage"]["requests"] == 6
    items = read_jsonl(tmp_path / "gen.jsonl", Sample)
    # every answer the LLM gave as an item is kept (3 images a type, 3 items wanted), in the item shape
    assert len(items) == sum(c.get("item", 0) for c in report["outcomes"].values())
    assert all(len(s.options) == 4 and s.qtype in (3, 9) and s.generator.startswith("llm:") for s in items)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_loop_with_llm_generation_and_automatic_ipo(tmp_path):
    cfg = small_config(rounds=1)
    cfg.generate.generator, cfg.generate.oversample, cfg.generate.max_images = "llm", 1, 1.0
    cfg.llm.local = True
    cfg.ipo = IPOConfig(rounds=1, per_type=1, types=[3, 9])
    cfg.sample.budget = 4
    run = tmp_path / "run"
    Loop(cfg, run).run()
    versions = [json.loads(line) for line in (run / "ipo" / "prompts.jsonl").read_text().splitlines()]
    assert versions[0]["correctness"] is not None and versions[0]["judged"] >= 1
    report = json.loads((run / "round_1" / "generate_report.json").read_text())
    assert report["usage"]["requests"] >= 1 and report["generator"].startswith("llm:gemma-3-270m:prompt-v")
    items = read_jsonl(run / "round_1" / "generated.jsonl", Sample)
    assert all(s.generator == report["generator"] for s in items)
    assert (run / "round_1" / "eval" / "results.json").exists()


def test_a_killed_tool_leaves_no_model_server_behind(tmp_path):
    # killed while the server is busy answering it: the hard case (a graceful shutdown would wait)
    code = ("import threading, time, httpx\nfrom dataengine.llm.server import LocalLLM\n"
            f"s = LocalLLM({str(tmp_path / 'server.log')!r})\nurl = s.start()\n"
            "body = {'model': 'gemma-3-270m', 'max_tokens': 2000, 'logit_bias': {'1': -100, '106': -100}, 'messages': [{'role': 'user', 'content': 'Tell a long story.'}]}\n"
            "threading.Thread(target=lambda: httpx.post(url + '/chat/completions', json=body, timeout=600), daemon=True).start()\n"
            "time.sleep(1.0)\nprint(s.proc.pid, flush=True)\ntime.sleep(600)\n")
    tool = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    server = int(tool.stdout.readline())
    os.kill(server, 0)  # serving
    tool.send_signal(signal.SIGKILL)
    tool.wait()
    deadline = time.monotonic() + 3  # SIGTERM would wait for the request to finish (seconds more)
    while time.monotonic() < deadline:
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            return
        if open(f"/proc/{server}/stat").read().split()[2] == "Z":  # exited, not yet reaped
            return
        time.sleep(0.2)
    os.kill(server, signal.SIGKILL)
    pytest.fail("the model server outlived the tool that started it")
