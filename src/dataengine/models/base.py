"""The small interface every model backend implements: the two requests the evaluator makes (as
lm-evaluation-harness's `LM` has `loglikelihood` and `generate_until`).

`VLM` (`vlm.py`) implements it in process with `transformers`; a model served behind an
OpenAI-compatible server (vLLM, LMDeploy) is another implementation of the same two methods.
Training needs more than this (`VLM.encode_batch`, `VLM.save`) and works on in-process models only.
"""
from __future__ import annotations

from typing import Iterable, Protocol

from PIL import Image


class Model(Protocol):
    def score_options(self, items: Iterable[tuple[Image.Image, str, list[str]]]) -> list[list[float]]:
        """Per item (image, question, options): each option's loss given image and question (mean
        negative log-likelihood per answer token; lower is better)."""
        ...

    def generate(self, items: Iterable[tuple[Image.Image, str]], max_new_tokens: int = 8) -> list[str]:
        """Per item (image, prompt): the model's reply, greedy."""
        ...
