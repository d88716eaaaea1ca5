"""An OpenAI-compatible chat-completions client made for bulk data generation.

- async, with a concurrency limit and request / token rate limits;
- retries 429, 5xx, connection errors, timeouts and unreadable bodies with exponential backoff and
  jitter, honouring Retry-After; several base URLs share the load (round robin);
- every answered request is kept in a SQLite cache keyed by the whole request body, so a killed
  run resumes without paying again, and a re-run with the same inputs makes no call at all;
- token usage (and cost, where prices are set) is counted.

The API key is read from the environment variable named in the config. It goes into the
Authorization header and nowhere else: not the cache, not logs, not error messages.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import sqlite3
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from ..errors import DataError

log = logging.getLogger("dataengine.llm")

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_urls: list[str] = []  # e.g. ["http://127.0.0.1:8000/v1"]; empty with local: true
    model: str = "gemma-3-270m"
    api_key_env: str | None = "OPENAI_API_KEY"  # the variable's NAME; the key itself is never stored
    temperature: float = 0.7  # the paper's sampling settings
    top_p: float = 0.9
    max_tokens: int = 800
    concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 5
    timeout: float = 120.0
    backoff: float = 1.0  # first retry waits about this long, then doubles
    max_backoff: float = 60.0
    # How to ask for JSON: "json_schema" (OpenAI, vLLM, llama.cpp's own server), "json_object_schema"
    # (llama-cpp-python: the schema becomes a grammar), "json_object", or "none" (parse what comes).
    structured: Literal["json_schema", "json_object_schema", "json_object", "none"] = "json_schema"
    price_input: float = 0.0  # per million prompt tokens
    price_output: float = 0.0  # per million completion tokens
    local: bool = False  # start the packaged Gemma-3-270M on a local llama.cpp server for the run
    send_image: bool = False  # attach the image as a data URL, for vision LLMs


class LLMError(Exception):
    """A request that could not be answered (after retries, or not retryable)."""


class LLMAuthError(LLMError, DataError):
    """The server refused the credentials (401 / 403): no request can succeed, so the run stops."""


class LLMConfigError(LLMError, DataError):
    """No server to ask: bad input, said in one line like any other."""


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass
class Usage:
    requests: int = 0  # calls that reached a server and were answered
    cached: int = 0
    retries: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, c: Completion) -> None:
        if c.cached:
            self.cached += 1
        else:
            self.requests += 1
            self.prompt_tokens += c.prompt_tokens
            self.completion_tokens += c.completion_tokens

    def cost(self, cfg: LLMConfig) -> float:
        return (self.prompt_tokens * cfg.price_input + self.completion_tokens * cfg.price_output) / 1e6

    def summary(self, cfg: LLMConfig) -> str:
        cost = self.cost(cfg)
        return (f"{self.requests} requests, {self.cached} from cache, {self.retries} retries, {self.failed} failed, "
                f"{self.prompt_tokens}+{self.completion_tokens} tokens" + (f", cost {cost:.4f}" if cost else ""))

    def as_dict(self, cfg: LLMConfig | None = None) -> dict:
        d = dict(self.__dict__)
        if cfg is not None:
            d["cost"] = round(self.cost(cfg), 6)
        return d


class Cache:
    """request-body hash -> response text; committed after every answer so a kill loses nothing."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("PRAGMA journal_mode=WAL")
        # Each answer is committed on arrival; NORMAL skips the fsync per commit, which a killed
        # process cannot undo (only a power cut could lose the last answers).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL)")
        self.db.commit()

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT response FROM calls WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?)", (key, json.dumps(response), time.time()))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class RateLimiter:
    """A token bucket refilled continuously: `rate` units per minute, at most a minute's worth banked."""

    def __init__(self, per_minute: float | None):
        self.rate = per_minute
        self.level = per_minute or 0.0
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n: float = 1.0) -> None:
        if not self.rate:
            return
        n = min(n, self.rate)
        async with self.lock:
            while True:
                now = time.monotonic()
                self.level = min(self.rate, self.level + (now - self.stamp) * self.rate / 60)
                self.stamp = now
                if self.level >= n:
                    self.level -= n
                    return
                await asyncio.sleep((n - self.level) * 60 / self.rate)


def retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def response_format(cfg: LLMConfig, schema: dict | None) -> dict | None:
    if schema is None or cfg.structured == "none":
        return None
    if cfg.structured == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "item", "schema": schema}}
    if cfg.structured == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_object"}


@dataclass
class LLMClient:
    cfg: LLMConfig
    cache_path: str | Path | None = None
    transport: httpx.AsyncBaseTransport | None = None  # tests pass a mock transport
    usage: Usage = field(default_factory=Usage)
    notify: Callable[[str], None] = lambda msg: None  # long waits are said here (the run's log)

    def __post_init__(self):
        if not self.cfg.base_urls:
            raise LLMConfigError("no LLM server configured: set llm.base_urls (--llm-url), or llm.local: true (--llm-local) "
                                 "for the packaged model")
        self.cache = Cache(self.cache_path) if self.cache_path else None
        self._next_url = 0

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _key(self) -> str | None:
        return os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None

    def redact(self, text: str) -> str:
        """The text with the API key (and any bearer token) taken out: for every stored or printed error."""
        key = self._key()
        if key:
            text = text.replace(key, "[redacted]")
        return re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", r"\1[redacted]", text)

    def body(self, messages: list[dict], schema: dict | None = None, seed: int | None = None,
             max_tokens: int | None = None) -> dict:
        c = self.cfg
        body = {"model": c.model, "messages": messages, "temperature": c.temperature, "top_p": c.top_p,
                "max_tokens": max_tokens or c.max_tokens}
        if seed is not None:
            body["seed"] = seed
        if (rf := response_format(c, schema)) is not None:
            body["response_format"] = rf
        return body

    @staticmethod
    def key(body: dict) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    async def _post(self, http: httpx.AsyncClient, body: dict, limits) -> dict:
        req_limit, tok_limit = limits
        est_tokens = len(json.dumps(body["messages"])) / 4 + body["max_tokens"]
        last = "no attempt"
        for attempt in range(self.cfg.max_retries + 1):
            await req_limit.take(1)
            await tok_limit.take(est_tokens)
            url = self.cfg.base_urls[self._next_url % len(self.cfg.base_urls)].rstrip("/") + "/chat/completions"
            self._next_url += 1
            wait = None
            try:
                resp = await http.post(url, json=body, headers=self._headers())
                if resp.status_code == 200:
                    data = resp.json()
                    _completion(data, cached=False)  # usable (text found), before it is cached
                    return data
                if resp.status_code in (401, 403):
                    raise LLMAuthError(f"{url}: HTTP {resp.status_code}: the server refused the credentials "
                                       f"(the key in the variable llm.api_key_env names, {self.cfg.api_key_env}): "
                                       f"{self.redact(resp.text[:200])}")
                if resp.status_code not in RETRY_STATUS:
                    raise LLMError(f"{url}: HTTP {resp.status_code}: {self.redact(resp.text[:200])}")
                last, wait = f"HTTP {resp.status_code}", retry_after(resp)
                if wait is not None and wait > self.cfg.max_backoff:
                    self.notify(f"{url} asks to wait {wait:.0f} s; waiting {self.cfg.max_backoff:.0f} s (llm.max_backoff)")
                    wait = self.cfg.max_backoff
            except (httpx.TransportError, httpx.TimeoutException) as e:
                last = f"{type(e).__name__}"
            except (ValueError, KeyError, IndexError, TypeError):
                last = "unreadable response body"
            if attempt == self.cfg.max_retries:
                break
            if wait is None:  # exponential backoff with jitter (half fixed, half random)
                base = min(self.cfg.max_backoff, self.cfg.backoff * 2 ** attempt)
                wait = base / 2 + random.uniform(0, base / 2)
            self.usage.retries += 1
            log.info("retrying after %s (attempt %d, waiting %.1fs)", last, attempt + 1, wait)
            if wait > 5:
                self.notify(f"LLM: {last}; retrying in {wait:.0f} s (attempt {attempt + 2} of {self.cfg.max_retries + 1})")
            await asyncio.sleep(wait)
        raise LLMError(f"{self.cfg.base_urls[0]}: gave up after {self.cfg.max_retries + 1} attempts: {last}")

    async def complete_many(self, bodies: list[dict], raw: bool = False) -> list[Completion | dict | LLMError]:
        """Answer every body; a failed one comes back as an LLMError in its place, never raised.
        `raw`: the server's whole response (a dict) instead of its text."""
        sem = asyncio.Semaphore(self.cfg.concurrency)
        limits = (RateLimiter(self.cfg.requests_per_minute), RateLimiter(self.cfg.tokens_per_minute))
        timeout = httpx.Timeout(self.cfg.timeout, connect=min(10.0, self.cfg.timeout))
        pool = httpx.Limits(max_connections=self.cfg.concurrency, max_keepalive_connections=self.cfg.concurrency)

        async def one(http, body) -> Completion | LLMError:
            key = self.key(body)
            if self.cache and (hit := self.cache.get(key)) is not None:
                try:
                    c = _completion(hit, cached=True)
                    self.usage.add(c)
                    return hit if raw else c
                except (KeyError, IndexError, TypeError, ValueError):
                    pass  # an unusable answer cached by an older version: asked again
            async with sem:
                try:
                    data = await self._post(http, body, limits)
                except LLMAuthError:
                    raise  # no request can succeed: the run stops, in one line
                except LLMError as e:
                    self.usage.failed += 1
                    return e
            if self.cache:
                self.cache.put(key, data)
            c = _completion(data, cached=False)
            self.usage.add(c)
            return data if raw else c

        async with httpx.AsyncClient(timeout=timeout, limits=pool, transport=self.transport) as http:
            return await asyncio.gather(*(one(http, b) for b in bodies))

    def run(self, bodies: list[dict]) -> list[Completion | LLMError]:
        return asyncio.run(self.complete_many(bodies))

    def run_raw(self, bodies: list[dict]) -> list[dict | LLMError]:
        """The servers' whole responses (for fields beyond the text, such as prompt log-probabilities)."""
        return asyncio.run(self.complete_many(bodies, raw=True))

    def close(self) -> None:
        if self.cache:
            self.cache.close()


def _count(v) -> int:
    """A token count from a usage field, which is bookkeeping: anything not a number counts 0."""
    try:
        return max(0, int(float(v)))
    except (TypeError, ValueError):
        return 0


def _completion(data: dict, cached: bool) -> Completion:
    """The text of a chat completion: `message.content` as a string, or as a list of parts (the
    OpenAI format allows it). KeyError / TypeError / ValueError when there is no usable text."""
    content = data["choices"][0]["message"].get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    if content is not None and not isinstance(content, str):
        raise TypeError("message.content is neither text nor a list of parts")
    u = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(text=content or "", cached=cached, prompt_tokens=_count(u.get("prompt_tokens")),
                      completion_tokens=_count(u.get("completion_tokens")))
