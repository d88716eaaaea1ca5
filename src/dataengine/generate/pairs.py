"""Hallucination-aware preference pairs (HA-DPO, arXiv 2311.16839, section 3): the model's own
description with hallucinations is the rejected side, the same description corrected the chosen
side. Both sides pass the same style rewrite, so a pair differs in its facts and not in its style
(HA-DPO's "style-consistent" pairs: a corrected text in another style would teach the style).

Pairs are JSON lines of `PreferencePair`, and convert to TRL's conversational preference format
(`prompt`, `chosen`, `rejected`, `images`) for `DPOTrainer`, or export as a Hugging Face dataset
with the images embedded.

Beside them, image-conditioned pairs (mDPO, arXiv 2406.11839): the same chosen answer, preferred
with its own picture over with another picture on which it is false, so the preference can only be
learnt by looking (plain multimodal DPO, mDPO found, learns about as much with the image removed).
"""
from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field

from ..errors import DataError
from ..images import load_image, resolve
from ..records import ImageAnnotation
from .hallucination import Judged, correct, detect, known_absent, read_claims


class PreferencePair(BaseModel):
    """One DPO pair: for `image` and `prompt`, `chosen` is preferred to `rejected`."""
    id: str
    image: str
    prompt: str
    chosen: str
    rejected: str
    reasons: list[str] = Field(default_factory=list)  # what was false in the rejected side
    detector: str = "grounded"
    source: str = "hadpo"
    # Under the model the pairs train (`check_on_policy`): the mean log-probability per token of the
    # chosen and of the rejected side, and whether the chosen side is too far from what it writes.
    policy_logp: tuple[float, float] | None = None
    off_policy: bool | None = None
    # An image-conditioned pair (`conditional_pairs`): the rejected side is `chosen` again, shown
    # this picture instead of `image`. None: both sides are shown `image`.
    rejected_image: str | None = None


def plain_style(text: str) -> str:
    """The grounded style rewrite: one space between words and a full stop at the end, the writer's
    own words and case kept. Applied to both sides, it leaves a pair's difference in its facts; and
    since the rejected side is the model's own text, the pair stays close to what the model writes
    (on-policy), which DPO under its KL term learns from best (arXiv 2501.09695)."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return text
    return text if text.endswith((".", "!", "?")) else text + "."


def make_pairs(judged: list[Judged], pool: dict[str, ImageAnnotation], names: list[str], exhaustive: bool = True,
               corrections: dict[str, str] | None = None,
               restyle: Callable[[list[str]], dict[str, str]] | None = None) -> list[PreferencePair]:
    """A pair per description with at least one hallucinated sentence: chosen = the corrected text,
    rejected = the original, both after the same style rewrite. `corrections` (by description id)
    replace the grounded corrector (`hallucination.correct`), e.g. an LLM's; `restyle` maps texts
    to their rewrites (default `plain_style`). A description without a correction, or whose sides
    come out empty or equal, makes no pair. DataError for a description whose image is not in `pool`."""
    fixed = []
    for j in judged:
        if not j.hallucinated:
            continue
        if j.image not in pool:
            raise DataError(f"description {j.id}: image {j.image} is not in the pool")
        text = corrections.get(j.id, "") if corrections is not None else correct(j.text, pool[j.image], names, exhaustive)
        if text.strip():
            fixed.append((j, text))
    texts = [t for j, text in fixed for t in (text, j.text)]
    styled = restyle(texts) if restyle else {t: plain_style(t) for t in texts}
    pairs = []
    for j, text in fixed:
        chosen, rejected = styled.get(text, ""), styled.get(j.text, "")
        if not chosen.strip() or not rejected.strip() or chosen == rejected:
            continue
        key = hashlib.sha1(f"{j.id}|{chosen}|{rejected}".encode()).hexdigest()[:10]
        pairs.append(PreferencePair(id=f"pair-{key}", image=j.image, prompt=j.prompt, chosen=chosen, rejected=rejected,
                                    reasons=[r for s in j.sentences for r in s.reasons], detector=j.detector))
    return pairs


def existence_pairs(judged: list[Judged], pool: dict[str, ImageAnnotation], names: list[str], exhaustive: bool = True,
                    question: str = "Is there a {name} in the image?") -> list[PreferencePair]:
    """Claim-level pairs in POPE's question form, one per object a description named: an object the
    image does not have (a hallucination) gives "Is there a <name> in the image?" with chosen "no",
    rejected "yes"; one it has, chosen "yes", rejected "no", as many of these as of the others (so
    the pairs do not teach "no" alone, nor "yes").
    Each name once per image; a name the annotation does not cover (not `exhaustive`, or one of the
    image's inexhaustive categories) is left out. The answers are the short ones POPE scores.
    DataError for a description whose image is not in `pool`."""
    pairs = []
    for j in judged:
        if j.image not in pool:
            raise DataError(f"description {j.id}: image {j.image} is not in the pool")
        ann = pool[j.image]
        present = {o.name for o in ann.objects}
        named = dict.fromkeys(m.name for s in j.sentences for m in read_claims(s.text, names).mentions)
        for name in named:
            if name in present:
                chosen, rejected, reasons = "yes", "no", []
            elif known_absent(name, ann, exhaustive):
                chosen, rejected, reasons = "no", "yes", [f"no {name} in the image"]
            else:
                continue
            prompt = question.format(name=name)
            key = hashlib.sha1(f"{j.image}|{prompt}".encode()).hexdigest()[:10]
            pairs.append(PreferencePair(id=f"exist-{key}", image=j.image, prompt=prompt, chosen=chosen, rejected=rejected,
                                        reasons=reasons, detector=j.detector, source="hadpo-existence"))
    no = [p for p in pairs if p.chosen == "no"]
    return no + [p for p in pairs if p.chosen == "yes"][:len(no)]


def conditional_pairs(pairs: list[PreferencePair], pool: dict[str, ImageAnnotation], names: list[str],
                      exhaustive: bool = True, tries: int = 64) -> list[PreferencePair]:
    """mDPO's conditional preference (arXiv 2406.11839, eq. 3) for each pair: chosen and rejected are
    both its chosen side; the rejected side is shown another pool image on which that side is false,
    so the only difference DPO can learn from is the picture. For a yes/no pair the other image
    flips the answer (it has the object when the answer is "no", lacks it when "yes"); for a
    description, the grounded detector finds a hallucinated sentence in it on the other image.
    Other images are tried in a seeded order (by pair id), `tries` at most; a pair for which none
    is found makes no conditional pair. A conditional pair's id is "cond-" and its source pair's.
    mDPO corrupts the picture (a random crop); an image that contradicts the answer is the sharper
    negative where annotations say which one does."""
    images = sorted(pool)
    out = []
    for p in pairs:
        if p.rejected_image or p.image not in pool:
            continue
        order = random.Random(p.id).sample(images, min(tries + 1, len(images)))
        other = next((i for i in order if i != p.image and _false_on(p, pool[i], names, exhaustive)), None)
        if other is None:
            continue
        out.append(p.model_copy(update={
            "id": f"cond-{p.id}", "rejected": p.chosen, "rejected_image": other,
            "reasons": [f"the same answer on {other}"], "source": "hadpo-conditional", "policy_logp": None, "off_policy": None}))
    return out


def _false_on(p: PreferencePair, ann: ImageAnnotation, names: list[str], exhaustive: bool) -> bool:
    if p.source == "hadpo-existence":
        mentions = read_claims(p.prompt, names).mentions
        if len(mentions) != 1:
            return False
        name, present = mentions[0].name, {o.name for o in ann.objects}
        if p.chosen == "no":
            return name in present
        return name not in present and known_absent(name, ann, exhaustive)
    return any(v.verdict == "hallucinated" for v in detect(p.chosen, ann, names, exhaustive))


def check_on_policy(vlm, pairs: list[PreferencePair], image_root: str | Path, gap: float = 1.0,
                    batch_size: int = 8) -> list[PreferencePair]:
    """The pairs with `policy_logp` (mean log-probability per token of chosen and rejected under
    `vlm`, the model DPO starts from) and `off_policy` set: True when the chosen side is less likely
    per token than the rejected one by more than `gap` nats.

    Why (arXiv 2501.09695, OPA-DPO): DPO's KL term keeps the policy near the reference, so it learns
    little from a chosen response the policy would not write; the rejected side of a hallucination
    pair is the model's own description, so it is what the model writes. A claim-level yes/no pair
    (`existence_pairs`) is scored but never marked: its one-word chosen side is less likely exactly
    when the model answers wrong, which is what the pair is there to change, and dropping those would
    leave the other answer alone. An image-conditioned pair is scored with each side's picture and
    carries its source pair's mark (both its sides are that pair's chosen text, so dropping one and
    not the other would still train that text). Pairs already scored keep their scores. DataError
    for a picture that does not open (naming the pair)."""
    todo = [p for p in pairs if p.policy_logp is None]
    scored: dict[str, tuple[float, float]] = {}
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        items, owners = [], []
        for p in chunk:
            img = load_image(image_root, p.image, where=f"pair {p.id}")
            if p.rejected_image:  # one side per picture
                items += [(img, p.prompt, [p.chosen]), (load_image(image_root, p.rejected_image, where=f"pair {p.id}"),
                                                        p.prompt, [p.rejected])]
                owners += [p.id, p.id]
            else:
                items.append((img, p.prompt, [p.chosen, p.rejected]))
                owners.append(p.id)
        losses: dict[str, list[float]] = {}
        for owner, nll in zip(owners, vlm.score_options(items, reduce="mean")):
            losses.setdefault(owner, []).extend(nll)
        scored |= {k: (-c, -r) for k, (c, r) in losses.items()}
    logp = {p.id: p.policy_logp or scored[p.id] for p in pairs}
    off = {p.id: p.source not in ("hadpo-existence", "hadpo-conditional") and logp[p.id][1] - logp[p.id][0] > gap
           for p in pairs}
    for p in pairs:
        if p.source == "hadpo-conditional":
            off[p.id] = off.get(p.id.removeprefix("cond-"), False)
    return [p.model_copy(update={"policy_logp": (round(logp[p.id][0], 4), round(logp[p.id][1], 4)), "off_policy": off[p.id]})
            for p in pairs]


def check_pairs(pairs: list[PreferencePair], image_root: str | Path, where: str = "pairs") -> None:
    """Every pair names a picture that opens and has both sides; DataError naming the pair otherwise."""
    if not pairs:
        raise DataError(f"{where}: no preference pairs")
    for p in pairs:
        if not p.chosen.strip() or not p.rejected.strip():
            raise DataError(f"{where}: pair {p.id}: an empty {'chosen' if not p.chosen.strip() else 'rejected'} side")
        if p.rejected_image == p.image:
            raise DataError(f"{where}: pair {p.id}: its rejected_image is its own image (an image-conditioned pair "
                            f"needs another picture)")
        for image in filter(None, (p.image, p.rejected_image)):
            load_image(image_root, image, where=f"pair {p.id}", max_side=32)


def to_trl(pairs: list[PreferencePair], image_root: str | Path) -> list[dict]:
    """Rows in TRL's conversational preference format, the image as a PIL picture:
    {"images": [img], "prompt": [user turn with {"type": "image"}], "chosen": [assistant turn],
    "rejected": [assistant turn]}. When any pair is image-conditioned, every row also has
    "rejected_images" (the rejected side's picture; the chosen's for a plain pair), which
    `train.dpo` shows the rejected half of each batch: a column TRL itself does not read."""
    rows = []
    two = any(p.rejected_image for p in pairs)
    for p in pairs:
        img = load_image(image_root, p.image, where=f"pair {p.id}")
        rows.append({
            "images": [img],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.prompt}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": p.chosen}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": p.rejected}]}],
        } | ({"rejected_images": [load_image(image_root, p.rejected_image, where=f"pair {p.id}") if p.rejected_image
                                  else img]} if two else {}))
    return rows


def export_pairs_hf(pairs: list[PreferencePair], image_root: str | Path, out_dir: str | Path) -> Path:
    """One Parquet file (`pairs.parquet`) with the pair fields and each image's bytes: loads with
    `datasets.load_dataset("parquet", data_dir=out_dir)`; `import_pairs_hf` reads it back."""
    import datasets
    check_pairs(pairs, image_root, str(out_dir))
    features = datasets.Features({k: datasets.Value("string") for k in ("id", "image_path", "prompt", "chosen", "rejected",
                                                                        "detector", "source")}
                                 | {"image": datasets.Image(), "reasons": datasets.Sequence(datasets.Value("string")),
                                    "policy_logp": datasets.Sequence(datasets.Value("float64")), "off_policy": datasets.Value("bool"),
                                    "rejected_image_path": datasets.Value("string"), "rejected_image_data": datasets.Image()})

    def picture(path: str | None) -> dict | None:
        return {"path": path, "bytes": resolve(image_root, path).read_bytes()} if path else None

    rows = [p.model_dump(exclude={"image", "rejected_image"}) | {"image_path": p.image, "image": picture(p.image),
                                                                 "rejected_image_path": p.rejected_image,
                                                                 "rejected_image_data": picture(p.rejected_image)}
            for p in pairs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(out_dir / "pairs.parquet"))
    return out_dir


def import_pairs_hf(data_dir: str | Path, image_root: str | Path) -> list[PreferencePair]:
    """Pairs back from `export_pairs_hf`; each image is written to its path under `image_root`."""
    from ..export import parquet_rows
    pairs = []
    for row in parquet_rows(data_dir, image_root, "pair"):
        other = row.get("rejected_image_path")  # absent from files written before image-conditioned pairs
        if other and not (path := resolve(image_root, other, where=f"pair {row['id']}")).exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(row["rejected_image_data"]["bytes"])
        pairs.append(PreferencePair(image=row["image_path"], rejected_image=other,
                                    **{k: row[k] for k in PreferencePair.model_fields if k not in ("image", "rejected_image")}))
    return pairs
