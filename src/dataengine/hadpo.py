"""The hallucination round, after HA-DPO (arXiv 2311.16839): describe -> detect -> pair -> DPO -> measure.

Each stage is a function over records and files; `run_hadpo` chains them in one folder and skips
a stage whose output is already there, so a killed run resumes (describing and DPO also resume
inside their stage).

    out/
      descriptions.jsonl   the starting model's descriptions of `hadpo.images` pool images
      judged.jsonl         a verdict per sentence, with reasons (grounded or LLM detector)
      pairs.jsonl          chosen = the corrected description, rejected = the original
      model/               the model after DPO (train_log.json beside its weights)
      before/ after/       hallucination.json: POPE per split and SHR on held-out images
      hadpo.json           both measurements and the counts of each stage
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Callable

from rich.progress import Progress

from .benchmarks.pope import build_pope, evaluate_pope, pope_metrics
from .config import HADPOConfig, RunConfig
from .errors import DataError
from .generate.describe import DETAIL_PROMPT, Description, describe
from .generate.hallucination import Judged, detect, shr
from .generate.pairs import PreferencePair, check_on_policy, conditional_pairs, existence_pairs, make_pairs
from .records import ImageAnnotation, Inputs, Sample, differs, read_jsonl, write_json, write_jsonl

Log = Callable[[str], None]
POPE_SPLITS = ("random", "popular", "adversarial")


def _quiet(msg: str) -> None:
    pass


def object_names(*pools: list[ImageAnnotation]) -> list[str]:
    """Every object name the annotations use: what the grounded detector looks for in a description."""
    return sorted({o.name for pool in pools for a in pool for o in a.objects})


def describe_prompt(cfg: RunConfig) -> str:
    """The request for a description: the one the tiny model was taught (its alignment stage's), or
    HA-DPO's "Describe this image in detail." for a checkpoint you bring."""
    if cfg.hadpo.prompt:
        return cfg.hadpo.prompt
    from .generate.align import REGIONS_Q
    return DETAIL_PROMPT if cfg.model.path else REGIONS_Q


def heldout_images(cfg: RunConfig, inputs: Inputs, pool: list[ImageAnnotation],
                   original: list[Sample]) -> tuple[list[ImageAnnotation], Path]:
    """The held-out images POPE and SHR are measured on, and their image root: `hadpo.eval_pool`;
    else, on the embedded world, `hadpo.eval_images` unseen scenes rendered beside its images; else
    that many pool images that no original training item shows (chosen by hash, so the same ones
    every time). DataError when a real pool has none to spare."""
    h = cfg.hadpo
    if h.eval_pool:
        anns = read_jsonl(h.eval_pool, ImageAnnotation)
        if not anns:
            raise DataError(f"{h.eval_pool}: hadpo.eval_pool holds no image annotations")
        return anns[:h.eval_images], Path(h.eval_image_root or inputs.image_root)
    if not cfg.data.pool:
        from .world.render import build_pool
        first = cfg.seed * 10**6 + 800_000  # beside the pool's and the benchmark's seed ranges, disjoint from both
        return (build_pool(inputs.image_root, "heldout", range(first, first + h.eval_images), cfg.world.image_size,
                           cfg.world.cooccurrence), inputs.image_root)
    trained = {s.image for s in original}
    spare = sorted((a for a in pool if a.image not in trained), key=lambda a: hashlib.sha1(a.image.encode()).hexdigest())
    if not spare:
        raise DataError(f"{inputs.pool}: every pool image is in the original training data; set hadpo.eval_pool "
                        f"to annotations of held-out images")
    return spare[:h.eval_images], inputs.image_root


def images_to_describe(pool: list[ImageAnnotation], heldout: list[ImageAnnotation], n: int, seed: int) -> list[ImageAnnotation]:
    """`n` pool images (a seeded draw), none of them a held-out one."""
    held = {a.image for a in heldout}
    rest = [a for a in pool if a.image not in held]
    random.Random(seed).shuffle(rest)
    if not rest:
        raise DataError("hadpo: no pool image is left to describe once the held-out ones are set aside")
    return rest[:n]


def judge_grounded(descriptions: list[Description], by_image: dict[str, ImageAnnotation], names: list[str],
                   exhaustive: bool) -> list[Judged]:
    """The grounded detector's verdicts on each description against its image's annotation."""
    return [Judged(id=d.id, image=d.image, prompt=d.prompt, text=d.text,
                   sentences=detect(d.text, by_image[d.image], names, exhaustive)) for d in descriptions]


def ticker(progress: Progress | None, what: str, total: int) -> Callable[[int], None] | None:
    """A progress task of `total` steps, and the function that advances it (None without progress)."""
    if progress is None:
        return None
    task = progress.add_task(what, total=total)
    return lambda n: progress.advance(task, n)


def detect_hallucinations(descriptions: list[Description], pool: list[ImageAnnotation], names: list[str], out: str | Path,
                          cfg: HADPOConfig, llm=None) -> list[Judged]:
    """A verdict per sentence of each description (hallucinated / correct / unjudged, with reasons),
    by the grounded detector or, with `detector: llm`, the LLM given the annotation (HA-DPO gave
    GPT-4 Visual Genome's). Written to `out`. DataError for a description whose image has no annotation."""
    by_image = {a.image: a for a in pool}
    missing = next((d for d in descriptions if d.image not in by_image), None)
    if missing:
        raise DataError(f"description {missing.id}: image {missing.image} has no annotation in the pool")
    if cfg.detector == "llm":
        from .generate.hallucination_llm import LLMHallucinations
        judged = LLMHallucinations(llm()).detect(descriptions, by_image)
    else:
        judged = judge_grounded(descriptions, by_image, names, cfg.exhaustive)
    write_jsonl(out, judged)
    return judged


def pair_up(judged: list[Judged], pool: list[ImageAnnotation], names: list[str], out: str | Path, cfg: HADPOConfig,
            llm=None) -> list[PreferencePair]:
    """Preference pairs from the hallucinated descriptions (`generate.pairs.make_pairs`): corrected by
    the grounded corrector, or by the LLM when it detected; restyled alike on both sides; with
    `pairs: [..., existence]` also the claim-level yes/no pairs (`existence_pairs`); with
    `conditional`, mDPO's image-conditioned pair for each (`conditional_pairs`; the other picture is
    one of the described images, never a held-out one). Written to `out`."""
    by_image = {a.image: a for a in pool}
    helper = None
    if cfg.detector == "llm" or cfg.style == "llm":
        from .generate.hallucination_llm import LLMHallucinations
        helper = LLMHallucinations(llm())
    corrections = helper.correct_all(judged, by_image) if cfg.detector == "llm" else None
    restyle = helper.restyle_all if cfg.style == "llm" else None
    pairs = make_pairs(judged, by_image, names, cfg.exhaustive, corrections=corrections, restyle=restyle) \
        if "description" in cfg.pairs else []
    if "existence" in cfg.pairs:
        pairs += existence_pairs(judged, by_image, names, cfg.exhaustive)
    if "conditional" in cfg.pairs:
        described = {j.image: by_image[j.image] for j in judged}
        pairs += conditional_pairs(pairs, described, names, cfg.exhaustive)
    write_jsonl(out, pairs)
    return pairs


def measure(model, anns: list[ImageAnnotation], image_root: str | Path, out_dir: str | Path, prompt: str,
            names: list[str], cfg: HADPOConfig, progress: Progress | None = None) -> dict:
    """How much `model` hallucinates on held-out images `anns`: SHR (hallucinated / judged sentences
    of its descriptions, by the grounded detector) and POPE's accuracy, precision, recall, F1 and
    yes-ratio per split (built from `anns`). Written to out_dir/hallucination.json, and read back
    from there when present."""
    import json
    out_dir = Path(out_dir)
    path = out_dir / "hallucination.json"
    if path.exists():
        return json.loads(path.read_text())
    descriptions = describe(model, anns, image_root, out_dir / "descriptions.jsonl", prompt=prompt,
                            max_new_tokens=cfg.max_new_tokens, on_batch=ticker(progress, "describe", len(anns)))
    judged = judge_grounded(descriptions, {a.image: a for a in anns}, names, cfg.exhaustive)
    write_jsonl(out_dir / "judged.jsonl", judged)
    pope = {}
    for split in POPE_SPLITS:
        items = build_pope(anns, split, per_image=cfg.pope_per_image)
        pope[split] = pope_metrics([i.label for i in items], evaluate_pope(model, items, image_root))
    result = {"shr": shr(judged), "pope": pope, "images": len(anns)}
    write_json(path, result)
    return result


def check_model(model_dir: str | Path, out: str | Path, model_name: str | None = None) -> str:
    """The name the round records for the model in `model_dir` (`model_name`, default its resolved
    folder), once the folder holds a model and `out` holds no round of another model; DataError
    otherwise. Cheap: callers run it before they build or read any input."""
    from .models.vlm import check_model_dir
    check_model_dir(model_dir)
    name = model_name or str(Path(model_dir).resolve())
    if differs(Path(out) / "hadpo_run.json", {"model": name}):
        raise DataError(f"{out}: holds the hallucination round of another model: use another --run-dir, or remove it")
    return name


def check_run(out: Path, what: dict) -> None:
    """Refuse a folder holding the hallucination round of another model or settings (its
    hadpo_run.json records them); a new folder gets the record."""
    path = out / "hadpo_run.json"
    if diff := differs(path, what):
        raise DataError(f"{out}: holds the hallucination round of another {', '.join(diff)}: "
                        f"use another --run-dir, or remove it")
    write_json(path, what)


def run_hadpo(model_dir: str | Path, cfg: RunConfig, inputs: Inputs, out: str | Path, llm=None,
              progress: Progress | None = None, log: Log = _quiet, model_name: str | None = None) -> dict:
    """The whole round from the model in `model_dir`: measure it, describe pool images, detect,
    pair, check the pairs on-policy (`hadpo.off_policy`), train by DPO into out/model, measure
    again. Returns (and writes to out/hadpo.json) both measurements and each stage's counts. `llm`:
    a callable giving the LLM client (detector or style "llm"). Resumes: a stage whose output exists is not run again; a folder of another model
    (`model_name`, default its resolved folder) or other settings is refused (DataError). With no
    pair (no description had a hallucination) the model is saved unchanged."""
    from .models.vlm import VLM
    from .train.dpo import train_dpo
    h, out = cfg.hadpo, Path(out)
    name = check_model(model_dir, out, model_name)  # before the folder is claimed for it
    check_run(out, {"model": name, "seed": cfg.seed,
                    "pool": hashlib.sha1(Path(inputs.pool).read_bytes()).hexdigest(),
                    "hadpo": h.model_dump(mode="json", exclude={"after_rounds"})})
    pool = read_jsonl(inputs.pool, ImageAnnotation)
    original = read_jsonl(inputs.original, Sample)
    heldout, heldout_root = heldout_images(cfg, inputs, pool, original)
    names = object_names(pool, heldout)
    prompt = describe_prompt(cfg)
    loaded: list[VLM] = []

    def vlm() -> VLM:
        if not loaded:
            loaded.append(VLM.load(model_dir))
        return loaded[0]

    before = measure(vlm(), heldout, heldout_root, out / "before", prompt, names, h, progress)
    log(f"before: {summary_line(before)}")
    pairs_path = out / "pairs.jsonl"
    if pairs_path.exists():
        pairs = read_jsonl(pairs_path, PreferencePair)
    else:
        chosen = images_to_describe(pool, heldout, h.images, cfg.seed)
        descriptions = describe(vlm(), chosen, inputs.image_root, out / "descriptions.jsonl", prompt=prompt,
                                max_new_tokens=h.max_new_tokens, on_batch=ticker(progress, "describe", len(chosen)))
        judged = detect_hallucinations(descriptions, pool, names, out / "judged.jsonl", h, llm)
        log(f"descriptions: {len(descriptions)}, SHR {shr(judged)['shr']:.1%} ({h.detector} detector)")
        pairs = pair_up(judged, pool, names, pairs_path, h, llm)
    if pairs and any(p.policy_logp is None or p.off_policy is None for p in pairs):
        pairs = check_on_policy(vlm(), pairs, inputs.image_root, gap=h.off_policy_gap)
        write_jsonl(pairs_path, pairs)
    off = [p for p in pairs if p.off_policy]
    log(f"pairs: {len(pairs)}, off-policy (chosen less likely per token than rejected by > {h.off_policy_gap} nats): "
        f"{len(off)}" + (", dropped" if h.off_policy == "drop" and off else ""))
    trained_on = [p for p in pairs if not p.off_policy] if h.off_policy == "drop" else pairs
    model_out = out / "model"
    if (model_out / "config.json").exists():
        trained = VLM.load(model_out)
    elif not trained_on:
        why = "every pair is off-policy (hadpo.off_policy: drop)" if pairs else "no description had a hallucination to correct"
        log(f"{why}: the model is kept as it is ({model_out})")
        trained = vlm()
        trained.save(model_out)
    else:
        trained = vlm()
        train_dpo(trained, trained_on, inputs.image_root, model_out, h.train.model_copy(update={"seed": h.train.seed + cfg.seed}),
                  progress=progress)
    after = measure(trained, heldout, heldout_root, out / "after", prompt, names, h, progress)
    log(f"after:  {summary_line(after)}")
    if change := kinds_change(before["shr"], after["shr"]):
        log(f"hallucinated sentences by false claim: {change}")
    result = {"before": before, "after": after, "pairs": len(pairs), "off_policy": len(off), "trained_pairs": len(trained_on),
              "heldout_images": len(heldout)}
    write_json(out / "hadpo.json", result)
    return result


def shr_text(shr: dict) -> str:
    """SHR as a person reads it: n/a when no sentence could be judged (not 0%: nothing was checked)."""
    if not shr["judged"]:
        return f"n/a (no sentence of {shr['sentences']} could be judged)"
    return f"{shr['shr']:.1%} ({shr['hallucinated']}/{shr['judged']})"


def kinds_change(before: dict, after: dict) -> str:
    """Hallucinated sentences by the kind of their false claim, before -> after ("object 11 -> 10,
    ..."), from two `shr()` results; empty when either has no kinds (a record from before them)."""
    b, a = before.get("by_kind") or {}, after.get("by_kind") or {}
    return ", ".join(f"{k} {b[k]} -> {a[k]}" for k in b if k in a)


def summary_line(m: dict) -> str:
    """One line of a measurement: SHR, the descriptions that loop (when recorded) and each POPE
    split's F1."""
    pope = "  ".join(f"POPE {s} F1 {m['pope'][s]['f1']:.1%}" for s in POPE_SPLITS if s in m["pope"])
    loops = f", {m['shr']['loops']} of {m['shr']['descriptions']} descriptions loop" if "loops" in m["shr"] else ""
    return f"SHR {shr_text(m['shr'])}{loops}  {pope}"
