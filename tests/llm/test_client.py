import asyncio
import logging
import time

from dataengine.llm.client import LLMClient, LLMConfig, LLMError, RateLimiter
from tests.support.fake_llm import FakeLLM


def client(urls, tmp_path=None, **kw) -> LLMClient:
    cfg = LLMConfig(base_urls=urls, **({"backoff": 0.01, "max_backoff": 0.05, "timeout": 0.5} | kw))
    return LLMClient(cfg, cache_path=tmp_path / "cache.sqlite" if tmp_path else None)


def bodies(c: LLMClient, n: int) -> list[dict]:
    return [c.body([{"role": "user", "content": f"item {i}"}], seed=i) for i in range(n)]


def test_every_fault_is_retried_and_the_answer_arrives():
    with FakeLLM(script=[429, 500, "timeout", "garbage", "empty", 503]) as srv:
        c = client([srv.url], max_retries=6)
        [out] = c.run(bodies(c, 1))
    assert not isinstance(out, LLMError) and '"blue"' in out.text
    assert len(srv.bodies) == 7 and c.usage.retries == 6 and c.usage.requests == 1


def test_giving_up_loses_nothing_else():
    with FakeLLM(script=[500, 500, 500]) as srv:
        c = client([srv.url], max_retries=2, concurrency=1)
        out = c.run(bodies(c, 3))
    assert isinstance(out[0], LLMError) and "HTTP 500" in str(out[0])
    assert [isinstance(o, LLMError) for o in out] == [True, False, False]
    assert c.usage.failed == 1 and c.usage.requests == 2 and len(srv.bodies) == 5


def test_client_errors_are_not_retried():
    with FakeLLM(script=[400]) as srv:
        c = client([srv.url])
        [out] = c.run(bodies(c, 1))
    assert isinstance(out, LLMError) and "HTTP 400" in str(out) and len(srv.bodies) == 1


def test_retry_after_is_honoured():
    with FakeLLM(script=[429], retry_after="1") as srv:
        c = client([srv.url], max_backoff=2.0)  # up to the configured limit
        t = time.monotonic()
        [out] = c.run(bodies(c, 1))
    assert not isinstance(out, LLMError) and time.monotonic() - t >= 1.0


def test_cache_answers_a_rerun_without_any_request(tmp_path):
    with FakeLLM() as srv:
        c = client([srv.url], tmp_path)
        first = c.run(bodies(c, 5))
        c.close()
        again = client([srv.url], tmp_path)
        second = again.run(bodies(again, 5))
    assert len(srv.bodies) == 5
    assert again.usage.cached == 5 and again.usage.requests == 0
    assert [a.text for a in first] == [b.text for b in second]
    # a changed request (another temperature) is not answered from the cache
    with FakeLLM() as srv:
        other = LLMClient(LLMConfig(base_urls=[srv.url], temperature=0.1), cache_path=tmp_path / "cache.sqlite")
        other.run(bodies(other, 5))
    assert len(srv.bodies) == 5


def test_load_is_spread_over_base_urls():
    with FakeLLM() as a, FakeLLM() as b:
        c = client([a.url, b.url])
        c.run(bodies(c, 10))
    assert len(a.bodies) == 5 and len(b.bodies) == 5


def test_api_key_goes_only_into_the_header(tmp_path, monkeypatch, caplog):
    secret = "sk-test-4f9a7c1e55d0"
    monkeypatch.setenv("DATAENGINE_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FakeLLM(script=[500]) as srv:
        c = client([srv.url], tmp_path, api_key_env="DATAENGINE_TEST_KEY")
        c.run(bodies(c, 2))
        c.close()
    assert srv.headers[0]["Authorization"] == f"Bearer {secret}"
    assert secret not in caplog.text
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes(), f.name
    assert secret not in str(c.cfg.model_dump())


def test_usage_and_cost_are_counted():
    with FakeLLM() as srv:
        c = client([srv.url], price_input=2.0, price_output=10.0)
        c.run(bodies(c, 4))
    assert c.usage.prompt_tokens == 400 and c.usage.completion_tokens == 80
    assert abs(c.usage.cost(c.cfg) - (400 * 2 + 80 * 10) / 1e6) < 1e-12


def test_rate_limiter_spaces_requests_once_the_bucket_is_empty():
    async def go():
        lim = RateLimiter(per_minute=120)  # 2 a second, a minute's worth banked
        t = time.monotonic()
        for _ in range(121):
            await lim.take(1)
        return time.monotonic() - t
    assert 0.4 <= asyncio.run(go()) < 2.0


def test_structured_output_formats():
    schema = {"type": "object"}
    for mode, expect in [("json_schema", "json_schema"), ("json_object_schema", "json_object"), ("json_object", "json_object")]:
        c = LLMClient(LLMConfig(base_urls=["http://x/v1"], structured=mode))
        assert c.body([], schema)["response_format"]["type"] == expect
    assert "response_format" not in LLMClient(LLMConfig(base_urls=["http://x/v1"], structured="none")).body([], schema)


def test_answers_of_unexpected_but_valid_shape(tmp_path):
    """Content as a list of parts (the API allows it) and usage fields that are not numbers are read;
    an answer with no text is retried, and never cached."""
    def odd(body):
        i = int(body["messages"][0]["content"].split()[-1])
        if i == 0:
            return {"choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": "part one, "},
                                                                             {"type": "text", "text": "part two"}]}}],
                    "usage": {"prompt_tokens": "12", "completion_tokens": None}}
        return {"choices": [{"message": {"role": "assistant", "content": "plain"}}], "usage": "n/a"}
    with FakeLLM(answer=odd) as srv:
        c = client([srv.url], tmp_path)
        out = c.run(bodies(c, 2))
    assert [o.text for o in out] == ["part one, part two", "plain"] and c.usage.prompt_tokens == 12
    calls = []

    def no_text_then_text(body):
        calls.append(1)
        return {"choices": [{"message": {"role": "assistant", "content": {"not": "text"}}}]} if len(calls) == 1 else "fine"
    with FakeLLM(answer=no_text_then_text) as srv:
        c = client([srv.url], tmp_path / "b")
        [out] = c.run(bodies(c, 1))
        [again] = c.run(bodies(c, 1))
    assert out.text == "fine" and again.cached and len(calls) == 2  # the unusable answer was asked again, not cached


def test_a_refused_key_stops_the_run_in_one_line_and_is_never_repeated(tmp_path, monkeypatch):
    import pytest

    from dataengine.errors import DataError
    secret = "sk-test-do-not-print-9f8e7d6c"
    monkeypatch.setenv("DE_KEY", secret)

    with FakeLLM(script=[401] * 20) as srv:
        srv_body = srv
        c = client([srv.url], tmp_path, api_key_env="DE_KEY")
        with pytest.raises(DataError) as e:
            c.run(bodies(c, 5))
    assert "HTTP 401: the server refused the credentials" in str(e.value) and secret not in str(e.value)
    assert len(srv_body.bodies) <= 5  # no retries
    assert c.redact(f"got Authorization: Bearer {secret} back") == "got Authorization: Bearer [redacted] back"
    assert c.redact(f"key={secret}") == "key=[redacted]"


def test_a_long_retry_after_is_capped_and_said(tmp_path):
    said = []
    with FakeLLM(script=[429], retry_after="3600") as srv:
        c = client([srv.url], tmp_path)
        c.notify = said.append
        t0 = time.monotonic()
        [out] = c.run(bodies(c, 1))
    assert not isinstance(out, LLMError) and time.monotonic() - t0 < 5
    assert said and "asks to wait 3600 s; waiting 0 s (llm.max_backoff)" in said[0]
