"""A model behind an OpenAI-compatible server, evaluated through the same stage as one in process."""
import base64
import io
import re

import pytest
from PIL import Image

from dataengine.benchmarks.mmbench import read_mmbench
from dataengine.errors import DataError
from dataengine.models.served import load_served
from dataengine.stages import evaluate_model
from tests.support.configs import small_config
from tests.support.fake_llm import FakeLLM
from tests.support.files import b64_image, write_tsv


def colour_of(body) -> str:
    """The colour of the picture the request carries (the stand-in model's eyes)."""
    url = next(c["image_url"]["url"] for c in body["messages"][0]["content"] if c["type"] == "image_url")
    r, _, b = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB").getpixel((0, 0))
    return "red" if r > b else "blue"


def served(body, logprobs=True):
    """A stand-in VLM server: replies name the option of the picture's colour; with `prompt_logprobs`,
    it returns each prompt token's log-probability (an option naming the colour is likely)."""
    colour = colour_of(body)
    if "prompt_logprobs" in body:
        if not logprobs:
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]}
        words = [w for m in body["messages"] for c in (m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}])
                 if c["type"] == "text" for w in c["text"].split()]
        said = body["messages"][-1]["content"].split() if body["messages"][-1]["role"] == "assistant" else []
        lps = [None] + [{"1": {"logprob": -1.0}} for _ in words[: len(words) - len(said)]]
        lps += [{"1": {"logprob": -0.1 if colour in w else -3.0}} for w in said]
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}], "prompt_logprobs": lps}
    text = body["messages"][0]["content"][1]["text"]
    letter = next((m.group(1) for m in re.finditer(r"^([A-H])\. (\w+)$", text, re.M) if m.group(2) == colour), "Z")
    return f"Looking at it, the answer is {letter}."


ROWS = [{"index": str(i), "question": "What colour is the picture?", "A": "red", "B": "blue", "answer": "A" if c == "red" else "B",
         "category": "colour", "image": b64_image(c, "PNG")} for i, c in enumerate(["red", "blue", "blue", "red"])]


@pytest.mark.parametrize("method", ["letter", "likelihood"])
def test_a_served_model_is_evaluated_like_one_in_process(tmp_path, method):
    write_tsv(tmp_path / "b.tsv", ROWS, fields=("index", "question", "A", "B", "answer", "category", "image"))
    qs = read_mmbench(tmp_path / "b.tsv", tmp_path / "img")
    cfg = small_config()
    cfg.evaluate.method, cfg.evaluate.blind, cfg.evaluate.held_out = method, False, 0.0
    with FakeLLM(answer=served) as srv:
        res = evaluate_model(srv.url, qs, tmp_path / "img", tmp_path / "ev", cfg)
        asked = len(srv.bodies)
        assert srv.bodies[0]["model"] == "fake-vlm" and srv.bodies[0]["temperature"] == 0.0  # listed by the server; greedy
    assert res.accuracy == 1.0
    assert asked == (4 if method == "letter" else 4 * 3)  # likelihood: the prompt alone, then with each option


def test_a_server_without_prompt_logprobs_says_to_use_letters(tmp_path):
    write_tsv(tmp_path / "b.tsv", ROWS, fields=("index", "question", "A", "B", "answer", "category", "image"))
    qs = read_mmbench(tmp_path / "b.tsv", tmp_path / "img")
    cfg = small_config()
    cfg.evaluate.blind, cfg.evaluate.held_out = False, 0.0
    with FakeLLM(answer=lambda body: served(body, logprobs=False)) as srv:
        with pytest.raises(DataError, match="returns no prompt log-probabilities .*--method letter for multiple choice, --method generate for yes/no"):
            evaluate_model(srv.url, qs, tmp_path / "img", tmp_path / "ev", cfg)


def test_the_served_model_is_named_by_the_server_or_by_the_user(tmp_path):
    with FakeLLM(answer=served) as srv:
        assert load_served(srv.url).client.cfg.model == "fake-vlm"
        assert load_served(srv.url, "internlm-xcomposer2").client.cfg.model == "internlm-xcomposer2"
    with pytest.raises(DataError, match="127.0.0.1:9/v1: cannot reach the server"):
        load_served("http://127.0.0.1:9/v1")
