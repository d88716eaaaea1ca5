"""Evaluate: answer every benchmark question, score per question type, keep each wrong answer.

Two ways to answer, as SEED-Bench does: `likelihood` picks the option with the lowest loss given image
and question (for generative models); `letter` lists the options and asks for the letter (the v2 way).
Predictions are appended as batches finish, so a killed evaluation resumes where it stopped.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
from pathlib import Path

from PIL import Image
from rich.progress import Progress

from .benchmarks.answers import extract_letter, letter_prompt
from .errors import DataError
from .images import load_image, resolve
from .models.base import Model
from .records import (
    LETTERS,
    EvalResult,
    Prediction,
    Question,
    TypeResult,
    append_jsonl,
    finish_partial,
    qtype_name,
    resume_jsonl,
    write_json,
    write_jsonl,
)
from .registry import Registry

# How a question is answered: by the likelihood of each option's text, or by asking for the letter.
METHODS: Registry[str] = Registry("evaluation method")
METHODS.register("likelihood", "the option with the lowest loss given image and question (SEED-Bench's way for generative models)")
METHODS.register("letter", "the options listed, the letter asked for and read from the reply")


PARTS = ("diagnosis", "report")


def split(questions: list[Question], held_out: float) -> dict[str, str]:
    """Question id -> its part of the benchmark: per type, the share `held_out` of the questions
    chosen by a hash of their ids (the same in every run, whatever the order) is the held-out
    "report" part, never seen by planning or generation; the rest is the "diagnosis" part ABS plans
    from. The rotations of one question (CircularEval, "<id>@<k>") stay together. {} for 0."""
    if held_out <= 0:
        return {}
    base = {q.question_id: q.group or re.sub(r"@\d+$", "", q.question_id) for q in questions}
    by_type: dict[int, dict[str, None]] = {}
    for q in questions:
        by_type.setdefault(q.qtype, {})[base[q.question_id]] = None
    report: set[str] = set()
    for ids in by_type.values():
        ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
        # at least one question a type stays in the diagnosis part, so planning sees every type
        report.update(ranked[:min(round(len(ranked) * held_out), len(ranked) - 1)])
    return {qid: "report" if b in report else "diagnosis" for qid, b in base.items()}


def blank_image(image_root: str | Path, rel: str) -> Image.Image:
    """A grey picture of the image's size (read from its header): the question without what it shows."""
    with Image.open(resolve(image_root, rel)) as im:
        return Image.new("RGB", im.size, (128, 128, 128))


def check_images(questions: list[Question], image_root: str | Path, source: str) -> None:
    """Fail before any work if an image is missing, so nothing half-done is left behind."""
    for q in questions:
        path = resolve(image_root, q.image, where=f"{source}: question {q.question_id}")
        if not path.exists():
            raise DataError(f"{path}: {source}: question {q.question_id}: image not found")


def evaluate(vlm: Model, questions: list[Question], image_root: str | Path, method: str = "likelihood",
             batch_size: int = 16, source: str = "benchmark", done: list[Prediction] | None = None,
             on_batch=None, progress: Progress | None = None, parts: dict[str, str] | None = None,
             blind: bool = False, prompt: str = "llava", max_new_tokens: int = 32, judge=None) -> list[Prediction]:
    """Answer every question; `parts` marks each prediction's part of a split benchmark; `blind`
    shows the model a grey picture instead of each image (what it answers from priors alone). By
    letter: the options are listed in the `prompt` layout, the reply (up to `max_new_tokens`) read as
    VLMEvalKit reads it, and a reply that names no option goes to `judge(questions, replies)` (an LLM
    that names the letter it means, or None), when given."""
    METHODS.get(method)
    parts = parts or {}
    check_images(questions, image_root, source)
    finished = {p.question_id: p for p in (done or [])}
    todo = [q for q in questions if q.question_id not in finished]
    task = progress.add_task("evaluate", total=len(questions), completed=len(finished)) if progress else None
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        # a picture far larger than the model's input is decoded at a reduced scale (JPEG), bounding memory
        side = 2 * vlm.input_side if getattr(vlm, "input_side", None) else None
        load = (lambda rel, where: blank_image(image_root, rel)) if blind else \
            (lambda rel, where: load_image(image_root, rel, where, max_side=side))
        images = [load(q.image, f"{source}: question {q.question_id}") for q in chunk]
        preds = []
        if method == "likelihood":
            scores = vlm.score_options([(img, q.text, q.options) for img, q in zip(images, chunk)])
            for q, s in zip(chunk, scores):
                pred = LETTERS[min(range(len(s)), key=s.__getitem__)]
                preds.append(_prediction(q, pred, scores=s, part=parts.get(q.question_id, "")))
        else:
            texts = vlm.generate([(img, letter_prompt(q, prompt)) for img, q in zip(images, chunk)], max_new_tokens=max_new_tokens)
            read = [extract_letter(t, q.options) for q, t in zip(chunk, texts)]
            unread = [i for i, (letter, _) in enumerate(read) if letter is None and texts[i].strip()]
            if judge and unread:
                for i, letter in zip(unread, judge([chunk[i] for i in unread], [texts[i] for i in unread])):
                    if letter:
                        read[i] = (letter, "judge")
            for q, t, (letter, how) in zip(chunk, texts, read):
                preds.append(_prediction(q, letter or "", raw=t, extracted=how, part=parts.get(q.question_id, "")))
        for p in preds:
            finished[p.question_id] = p
        if on_batch:
            on_batch(preds)
        if progress:
            progress.advance(task, len(chunk))
    return [finished[q.question_id] for q in questions]


def score_replies(questions: list[Question], replies: dict[str, str], parts: dict[str, str] | None = None,
                  judge=None) -> list[Prediction]:
    """Predictions from replies given elsewhere (question id -> raw reply), each read as a letter as
    the letter method reads a generated reply; a question with no reply counts as wrong."""
    parts = parts or {}
    read = {q.question_id: extract_letter(replies.get(q.question_id, ""), q.options) for q in questions}
    unread = [q for q in questions if read[q.question_id][0] is None and replies.get(q.question_id, "").strip()]
    if judge and unread:
        for q, letter in zip(unread, judge(unread, [replies[q.question_id] for q in unread])):
            if letter:
                read[q.question_id] = (letter, "judge")
    return [_prediction(q, read[q.question_id][0] or "", raw=replies.get(q.question_id, ""),
                        extracted=read[q.question_id][1] if q.question_id in replies else "missing",
                        part=parts.get(q.question_id, "")) for q in questions]


def write_evaluation(preds: list[Prediction], out_dir: str | Path, benchmark: str, method: str) -> EvalResult:
    """predictions.jsonl, badcases.jsonl and results.json of an evaluation, into `out_dir`."""
    out_dir = Path(out_dir)
    result = summarize(preds, benchmark, method)
    write_jsonl(out_dir / "predictions.jsonl", preds)
    write_jsonl(out_dir / "badcases.jsonl", [p for p in preds if not p.correct])
    write_json(out_dir / "results.json", result)
    return result


def _prediction(q: Question, pred: str, scores=None, raw: str = "", extracted: str = "", part: str = "") -> Prediction:
    return Prediction(question_id=q.question_id, qtype=q.qtype, image=q.image, category=q.category,
                      l2_category=q.l2_category, question=q.text, options=q.options,
                      answer=q.answer, prediction=pred, correct=pred == q.answer, scores=scores or [], raw=raw,
                      extracted=extracted, part=part, group=q.group, rotation=q.rotation)


def summarize(preds: list[Prediction], benchmark: str = "", method: str = "likelihood") -> EvalResult:
    """Accuracy overall, per type and per l2-category; with a split benchmark, the same for each part
    (`parts`). Under CircularEval the accuracy is the single pass (rotation 0, the score VLMEvalKit
    prints beside the circular one) and `circular` the share of questions right in every rotation."""
    result = _summarize(preds, benchmark, method)
    if any(p.part for p in preds):
        result.parts = {part: _summarize([p for p in preds if p.part == part], benchmark, method) for part in PARTS}
    return result


def _summarize(preds: list[Prediction], benchmark: str, method: str) -> EvalResult:
    rotated = any(p.rotation for p in preds)
    single = [p for p in preds if p.rotation == 0] if rotated else preds
    per: dict[int, TypeResult] = {}
    l2: dict[str, TypeResult] = {}
    for p in single:
        r = per.setdefault(p.qtype, TypeResult(qtype=p.qtype, name=p.category or qtype_name(p.qtype), total=0, correct=0))
        r.total += 1
        r.correct += p.correct
        if p.l2_category:
            c = l2.setdefault(p.l2_category, TypeResult(qtype=0, name=p.l2_category, total=0, correct=0))
            c.total += 1
            c.correct += p.correct
    circ = None
    if rotated:
        from .benchmarks.mmbench import circular_scores
        circ = circular_scores(preds)["overall"]["circular"]
    return EvalResult(benchmark=benchmark, method=method, per_type=dict(sorted(per.items())), total=len(single),
                      correct=sum(p.correct for p in single), per_l2=dict(sorted(l2.items())), circular=circ,
                      extraction={how: sum(p.extracted == how for p in preds) for how in ("letter", "option", "judge", "none", "missing")}
                      if method == "letter" else {})


def _dist():
    """(rank, world size); joins the process group when started by torchrun / accelerate launch."""
    import os

    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        import torch
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def run_evaluate(vlm: Model, questions: list[Question], image_root: str | Path, out_dir: str | Path,
                 method: str = "likelihood", batch_size: int = 16, benchmark: str = "",
                 progress: Progress | None = None, held_out: float = 0.0, blind: bool = False, prompt: str = "llava",
                 max_new_tokens: int = 32, judge=None) -> EvalResult:
    """Evaluate into `out_dir`: predictions.jsonl, badcases.jsonl, results.json. Resumes a killed run.
    `held_out`: the share of each type's questions held out as the report part (`split`); `blind`:
    grey pictures instead of the images.

    Under torchrun / accelerate launch each process answers every N-th question; the predictions
    are gathered, merged in question order, and written once by the first process."""
    rank, world = _dist()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / ("predictions.partial.jsonl" if world == 1 else f"predictions.partial.rank{rank}of{world}.jsonl")
    what = {"model": model_id(vlm), "benchmark": benchmark, "method": method, "held_out": held_out, "blind": blind,
            "prompt": prompt if method == "letter" else None,
            "questions": hashlib.sha1("\n".join(q.question_id for q in questions).encode()).hexdigest()}
    done = resume_jsonl(partial, Prediction, what, kind="answers")
    append = functools.partial(append_jsonl, partial)
    mine = questions[rank::world]
    preds = evaluate(vlm, mine, image_root, method, batch_size, source=benchmark or "benchmark",
                     done=done, on_batch=append, progress=progress if rank == 0 else None,
                     parts=split(questions, held_out), blind=blind, prompt=prompt, max_new_tokens=max_new_tokens, judge=judge)
    if world > 1:
        import torch.distributed as dist
        parts: list = [None] * world
        dist.all_gather_object(parts, [p.model_dump() for p in preds])
        by_id = {d["question_id"]: Prediction.model_validate(d) for part in parts for d in part}
        preds = [by_id[q.question_id] for q in questions]
    result = summarize(preds, benchmark, method)
    if rank == 0:
        write_evaluation(preds, out_dir, benchmark, method)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
    finish_partial(partial)
    return result


def model_id(model) -> str:
    """What a model is, for telling one evaluation's partial answers from another's: a hash of some
    of its weights (in process), or its server and name."""
    if hasattr(model, "client"):
        return f"{model.client.cfg.base_urls[0]}#{model.client.cfg.model}"
    if hasattr(model, "model"):
        h = hashlib.sha1()
        for _, p in list(model.model.named_parameters())[:4]:
            h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()
    return type(model).__name__


def load_results(out_dir: str | Path) -> EvalResult:
    path = Path(out_dir) / "results.json"
    if not path.exists():
        raise DataError(f"{path}: no evaluation results here")
    return EvalResult.model_validate_json(path.read_text())


def regressions(before: EvalResult, after: EvalResult, starved, z: float = 2.0) -> list[dict]:
    """A regression guard: the types of `starved` (those that got no items in the round between the
    two results) that lost more than `z` standard errors of the difference. Judged on the report part
    when the benchmark is split. Each: qtype, name, before, after, noise (the standard error)."""
    b, a = before.part("report"), after.part("report")
    out = []
    for t in sorted(starved):
        if t not in b.per_type or t not in a.per_type:
            continue
        x, y = b.per_type[t], a.per_type[t]
        noise = math.sqrt(x.accuracy * (1 - x.accuracy) / max(x.total, 1) + y.accuracy * (1 - y.accuracy) / max(y.total, 1))
        if x.accuracy - y.accuracy > z * max(noise, 1e-9):
            out.append({"qtype": t, "name": y.name, "before": x.accuracy, "after": y.accuracy, "noise": noise})
    return out
