"""A vision-language model behind an OpenAI-compatible chat API (vLLM, SGLang, LMDeploy, Ollama,
llama.cpp with a vision projector): how models this project does not load itself are evaluated
(InternLM-XComposer2 through LMDeploy, MiniGPT-style models, API models), through the same client as
the LLM generator (concurrency, retries, rate limits, the request cache).

Replies come by generation, greedy, with the image sent as a data URL. Option likelihoods need the
prompt's log-probabilities, which vLLM returns (`prompt_logprobs`): each option is sent as the
assistant's reply, and its loss is the log-probability of the whole prompt with it minus that of
the prompt without it.
"""
from __future__ import annotations

import base64
import io
from typing import Iterable

import httpx
from PIL import Image

from ..errors import DataError
from ..llm.client import LLMClient, LLMConfig, LLMError


def data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def served_model_name(base_url: str, api_key: str | None = None) -> str:
    """The first model the server lists at /models."""
    try:
        r = httpx.get(base_url.rstrip("/") + "/models", timeout=10,
                      headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    except httpx.HTTPError as e:
        raise DataError(f"{base_url}: cannot reach the server ({type(e).__name__})") from None
    try:
        return r.json()["data"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise DataError(f"{base_url}: no model listed at /models; name one (--served-model)") from None


class ServedVLM:
    """The `Model` interface over an OpenAI-compatible server."""

    def __init__(self, client: LLMClient):
        self.client = client

    def _body(self, messages: list[dict], max_tokens: int, **extra) -> dict:
        body = self.client.body(messages, seed=0, max_tokens=max_tokens)
        body.update(temperature=0.0, **extra)  # greedy, as in-process evaluation is
        body.pop("top_p", None)
        return body

    @staticmethod
    def _user(img: Image.Image, text: str) -> dict:
        return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(img)}},
                                            {"type": "text", "text": text}]}

    def _run(self, bodies: list[dict]) -> list:
        answers = self.client.run(bodies)
        failed = next((a for a in answers if isinstance(a, LLMError)), None)
        if failed:
            raise DataError(f"served model: {failed}")
        return answers

    def generate(self, items: Iterable[tuple[Image.Image, str]], max_new_tokens: int = 8) -> list[str]:
        return [a.text.strip() for a in self._run([self._body([self._user(img, q)], max_new_tokens) for img, q in items])]

    def score_options(self, items: Iterable[tuple[Image.Image, str, list[str]]]) -> list[list[float]]:
        items = list(items)
        bodies = []
        for img, q, options in items:
            user = self._user(img, q)
            bodies.append(self._body([user], 1, prompt_logprobs=0))
            for o in options:
                bodies.append(self._body([user, {"role": "assistant", "content": " " + o.strip()}], 1, prompt_logprobs=0,
                                         add_generation_prompt=False, continue_final_message=True))
        raw = self._raw(bodies)
        out, i = [], 0
        for _, _, options in items:
            base_lp, base_n = raw[i]
            scores = []
            for k in range(len(options)):
                lp, n = raw[i + 1 + k]
                scores.append(-(lp - base_lp) / max(n - base_n, 1))  # mean loss per option token
            out.append(scores)
            i += 1 + len(options)
        return out

    def _raw(self, bodies: list[dict]) -> list[tuple[float, int]]:
        """Per body: the sum of the prompt's token log-probabilities, and its token count."""
        out = []
        for body, answer in zip(bodies, self.client.run_raw(bodies)):
            if isinstance(answer, LLMError):
                raise DataError(f"served model: {answer}")
            lps = answer.get("prompt_logprobs")
            if not isinstance(lps, list):
                raise DataError(f"{self.client.cfg.base_urls[0]}: the server returns no prompt log-probabilities "
                                f"(vLLM does), so options cannot be scored by likelihood: use a generation method "
                                f"(--method letter for multiple choice, --method generate for yes/no)")
            vals = [next(iter(t.values()))["logprob"] if isinstance(t, dict) and t else 0.0 for t in lps if t is not None]
            out.append((sum(vals), len(lps)))
        return out


def load_served(url: str, name: str | None = None, concurrency: int = 8, cache=None, api_key_env: str | None = "OPENAI_API_KEY") -> ServedVLM:
    import os
    key = os.environ.get(api_key_env) if api_key_env else None
    cfg = LLMConfig(base_urls=[url], model=name or served_model_name(url, key), concurrency=concurrency, api_key_env=api_key_env)
    return ServedVLM(LLMClient(cfg, cache_path=cache))
