"""Generation: `generate` (the stage: images per type, balanced answers) over any generator; the
grounded generator (exact items from annotations, no LLM) and the LLM generator (an
OpenAI-compatible server and the versioned prompt). Later data strategies (evolution, preference
pairs, dialog merging) live here beside them."""
from __future__ import annotations

from ..registry import Registry
from .base import Generator, balance_answers, generate
from .grounded import GroundedGenerator, make_sample
from .llm import LLMGenerator

GENERATORS: Registry[type] = Registry("generator")
GENERATORS.register("grounded", GroundedGenerator)
GENERATORS.register("llm", LLMGenerator)

__all__ = ["GENERATORS", "Generator", "GroundedGenerator", "LLMGenerator", "balance_answers", "generate", "make_sample"]
