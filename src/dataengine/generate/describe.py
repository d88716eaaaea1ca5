"""Describe: the model writes a description of each image (the first step of HA-DPO, arXiv
2311.16839), by batched greedy generation through the same model interface evaluation uses, so a
model in this process or one behind a server describes alike. Descriptions are appended as
batches finish: a killed run resumes where it stopped."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from ..errors import DataError
from ..evaluate import model_id
from ..images import load_image
from ..records import ImageAnnotation, append_jsonl, finish_partial, resume_jsonl, write_jsonl

# HA-DPO's request; the embedded model learnt its descriptions from region descriptions, so it is
# asked the way it was taught (generate/align.py's REGIONS_Q).
DETAIL_PROMPT = "Describe this image in detail."


class Description(BaseModel):
    id: str
    image: str
    prompt: str
    text: str
    model: str = ""


def describe(model, pool: list[ImageAnnotation], image_root: str | Path, out: str | Path, prompt: str = DETAIL_PROMPT,
             batch_size: int = 16, max_new_tokens: int = 96, on_batch: Callable[[int], None] | None = None) -> list[Description]:
    """One description per image of `pool`, written to `out` (JSON lines), in pool order. `model`:
    anything with `generate(items, max_new_tokens)` (an in-process `VLM`, a `ServedVLM`). A killed
    run resumes from `out`'s `.partial` file; one of another model or prompt is refused.
    `on_batch(n)` is told how many descriptions each batch added. DataError for an empty pool."""
    if not pool:
        raise DataError(f"{out}: no images to describe")
    out = Path(out)
    partial = out.with_suffix(".partial.jsonl")
    name = model_id(model)
    what = {"model": name, "prompt": prompt, "max_new_tokens": max_new_tokens,
            "images": hashlib.sha1("\n".join(a.image for a in pool).encode()).hexdigest()}
    done = {d.image: d for d in resume_jsonl(partial, Description, what, kind="descriptions")}
    todo = [a for a in pool if a.image not in done]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        images = [load_image(image_root, a.image, where=f"image {a.image_id}") for a in chunk]
        texts = model.generate([(img, prompt) for img in images], max_new_tokens=max_new_tokens)
        batch = [Description(id=f"desc-{a.image_id}", image=a.image, prompt=prompt, text=t, model=name) for a, t in zip(chunk, texts)]
        append_jsonl(partial, batch)
        done.update((d.image, d) for d in batch)
        if on_batch:
            on_batch(len(batch))
    descriptions = [done[a.image] for a in pool]
    write_jsonl(out, descriptions)
    finish_partial(partial)
    return descriptions
