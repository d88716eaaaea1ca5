"""The LLM generator: one item per image from an OpenAI-compatible server, with the versioned
generation prompt (`llm/prompt.py`) and ABS's bad cases as in-context examples."""
from __future__ import annotations

import base64
import hashlib
import random
from collections import Counter

from ..images import resolve
from ..llm.client import LLMError
from ..llm.prompt import SCHEMA, parse
from ..records import LETTERS, ImageAnnotation, Sample


class LLMGenerator:
    """Asks an LLM for one item per image with the versioned generation prompt.

    Each request carries a seed made from the image, the type and the prompt version, so the same
    inputs make the same request and a re-run is answered from the client's cache. Options are
    shuffled after generation so the correct letter is uniform. What came back is counted per type:
    items, skips, malformed answers, failed requests.
    """

    def __init__(self, client, prompt, source: str = "generated", image_root: str | None = None):
        self.client, self.prompt, self.source, self.image_root = client, prompt, source, image_root
        self.name = f"llm:{client.cfg.model}:prompt-v{prompt.version}"
        self.outcomes: dict[int, Counter] = {}
        self.problems: list[dict] = []  # what was dropped before filtering, and why

    def _image_url(self, ann: ImageAnnotation) -> str | None:
        if not (self.client.cfg.send_image and self.image_root):
            return None
        path = resolve(self.image_root, ann.image)
        return f"data:image/{path.suffix.lstrip('.') or 'png'};base64," + base64.b64encode(path.read_bytes()).decode()

    def generate_batch(self, qtype, anns, examples, rng):
        bodies = []
        for ann in anns:
            seed = int(hashlib.sha1(f"{ann.image_id}|{qtype}|{self.prompt.version}".encode()).hexdigest()[:8], 16)
            bodies.append(self.client.body(self.prompt.messages(qtype, ann, examples, self._image_url(ann)), SCHEMA, seed=seed))
        counts = self.outcomes.setdefault(qtype, Counter())
        out = []
        for ann, answer in zip(anns, self.client.run(bodies)):
            if isinstance(answer, LLMError):
                counts["failed"] += 1
                self.problems.append({"image": ann.image, "qtype": qtype, "kind": "failed", "reason": str(answer)})
                continue
            parsed = parse(answer.text)
            counts[parsed.kind] += 1
            if parsed.kind != "item":
                self.problems.append({"image": ann.image, "qtype": qtype, "kind": parsed.kind, "reason": parsed.reason,
                                      "text": answer.text[:500]})
                continue
            it = parsed.item
            correct = it.options[LETTERS.index(it.correct)]
            options = list(it.options)
            key = hashlib.sha1(f"{ann.image_id}|{qtype}|{it.question}".encode()).hexdigest()[:10]
            random.Random(key).shuffle(options)
            out.append(Sample(id=f"{self.source}-{qtype}-{key}", image=ann.image, instruction=it.question.strip(),
                              answer=it.answer.strip(), short_answer=it.short_answer.strip(), options=options,
                              choice_answer=LETTERS[options.index(correct)], qtype=qtype, source=self.source,
                              generator=self.name))
        return out
