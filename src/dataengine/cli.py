"""The `dataengine` command: a thin layer over the library (`stages.py`), one subcommand per stage.

Every stage command takes `--config` (the loop's YAML): its settings are the defaults, the flags
override them, so a stage run alone does what the same stage does in the loop.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="A closed-loop data engine for multimodal LLMs (after MLLM-DataEngine).")
console = Console()

_CONFIG = typer.Option(None, "--config", help="YAML run config (as for `loop`): its settings are the defaults here.")
_LLM_URL = typer.Option([], "--llm-url", help="OpenAI-compatible base URL (repeat to spread the load).")
_YN_METHOD = typer.Option("likelihood", help="likelihood (of yes against no), or generate (a reply, read by --rule)")
_YN_RULE = typer.Option("pope", help="generate: how a reply is read, pope (POPE's rule) or vlmevalkit")
_SERVED = typer.Option(None, help="A served model's name (default: the first the server lists).")
_LLM_LOCAL = typer.Option(False, "--llm-local", help="Start the packaged Gemma-3-270M on a local llama.cpp server.")


def _fail(e: Exception) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {e}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


@contextlib.contextmanager
def _errors():
    """Bad input ends the command with one line and exit code 2."""
    try:
        yield
    except DataError as e:
        _fail(e)


def _config(path: Optional[Path], **overrides):
    """The run config at `path` (defaults if None), with each override ("section__field": value) that
    is not None applied and checked as the file's own values are."""
    from pydantic import ValidationError

    from .config import RunConfig, load_config, problem
    cfg = load_config(path)
    data = cfg.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, field = key.split("__")
        node = data
        for p in parents:
            node = node[p]
        node[field] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise DataError(problem(e)) from None


def _progress():
    from .report.terminal import progress_bar
    return progress_bar(console)


def _read(path: Path, model):
    from .records import read_jsonl
    return read_jsonl(path, model)


def _read_all(paths: list[Path], model) -> list:
    return [x for p in paths for x in _read(p, model)]


_REVIEW = typer.Option(None, "--review", help="A run directory whose review decisions (review.sqlite) apply: rejected "
                       "items left out, edited ones in place of the originals if they passed the filter.")


def _reviewed(samples: list, run_dir: Optional[Path]) -> list:
    if run_dir is None:
        return samples
    from .review.store import apply_review
    applied = apply_review(samples, run_dir)
    console.print(f"review decisions applied: {applied.summary()}", highlight=False)
    return applied.items


# ---- the loop ----

@app.command()
def loop(config: Optional[Path] = typer.Option(None, help="YAML run config; defaults build the embedded world."),
         run_dir: Path = typer.Option(Path("runs/default"), help="Where every round's files go; re-run to resume."),
         rounds: Optional[int] = typer.Option(None, min=0, help="Rounds after the base round (config default: 3).")):
    """Run evaluate -> plan -> generate -> filter -> train -> evaluate for several rounds."""
    from .config import load_config
    from .loop import Loop
    with _errors():
        Loop(load_config(config), run_dir, console).run(rounds)


@app.command()
def world(out: Path = typer.Argument(..., help="Folder for images/, pool.jsonl, benchmark.json, starter.jsonl."),
          config: Optional[Path] = _CONFIG,
          hard: int = typer.Option(0, min=0, help="Also write hard.json: this many multi-step and other-format questions "
                                                  "per category (instruction evolution's kinds), on scenes of their own.")):
    """Render the synthetic world: generation pool, SEED-format benchmark, starter set."""
    from .world.build import build_world
    from .world.hard import build_hard
    with _errors():
        cfg = _config(config)
        inputs = build_world(cfg, out)
        if hard:
            console.print(f"wrote {build_hard(cfg, out, hard)} (its images under {inputs.image_root / 'hard'})")
    console.print(f"wrote {inputs.benchmark}, {inputs.pool}, {inputs.original} and images under {inputs.image_root}")


# ---- models ----

@app.command("init-model")
def init_model(out: Path = typer.Argument(...), corpus_from: Path = typer.Option(..., help="JSONL of samples for the tokenizer."),
               pool: Optional[Path] = typer.Option(None, help="Annotations to pretrain the vision tower on."),
               image_root: Optional[Path] = typer.Option(None), vision_steps: Optional[int] = typer.Option(None),
               family: Optional[str] = typer.Option(None, help="llava (default), llava_next, idefics3, qwen2_vl, qwen2_5_vl or paligemma"),
               config: Optional[Path] = _CONFIG):
    """Build a tiny random-initialised model (LLaVA by default) with a tokenizer trained on your data;
    with --pool, pretrain its vision tower on the pool's annotations (LLaVA's tower only)."""
    from . import stages
    from .records import ImageAnnotation, Sample
    with _errors():
        cfg = _config(config, model__tiny__family=family, model__vision_pretrain_steps=vision_steps)
        if (out / "config.json").exists():
            raise DataError(f"{out}: already holds a model; write the new one to another folder, or remove it")
        anns = _read(pool, ImageAnnotation) if pool else None
        if pool and image_root is None:
            raise DataError("--image-root is needed with --pool")
        with _progress() as p:
            vlm, scores = stages.init_model(_read(corpus_from, Sample), cfg, out, anns, image_root, progress=p)
        if pool and scores is None:
            console.print(f"[yellow]--pool ignored: vision pretraining knows LLaVA's CLIP tower, not {vlm.kind}'s[/yellow]")
        vlm.save(out)
    if scores:
        console.print("vision tower probe (held-out patches): " + ", ".join(f"{k} {v:.0%}" for k, v in scores.items()))
    console.print(f"wrote {out}")


@app.command()
def train(model: Path = typer.Option(...), data: list[Path] = typer.Option(..., help="Sample JSONL files; repeat to mix."),
          image_root: Path = typer.Option(...), out: Path = typer.Option(...), config: Optional[Path] = _CONFIG,
          epochs: Optional[float] = typer.Option(None), lr: Optional[float] = typer.Option(None),
          batch_size: Optional[int] = typer.Option(None), lora: bool = typer.Option(False, help="LoRA adapters (merged back)."),
          lora_r: int = typer.Option(16), seed: int = typer.Option(0),
          freeze_vision: Optional[bool] = typer.Option(None, "--freeze-vision/--train-vision",
                                                       help="Keep the vision tower as it is (the loop's default)."),
          vision_lr: Optional[float] = typer.Option(None, help="Learning rate of the vision tower and projector."),
          preset: Optional[str] = typer.Option(None, help="The papers' settings: llava-1.5-lora, llava-1.5-full, minigpt4-lora."),
          sampling: Optional[str] = typer.Option(None, help="random, or sequential (the seeded shuffle as the order)"),
          grad_accum: Optional[int] = typer.Option(None),
          save_steps: Optional[int] = typer.Option(None, help="A checkpoint every N steps; a re-run resumes from the last one."),
          bf16: Optional[bool] = typer.Option(None, help="bf16 mixed precision (GPU)."),
          gradient_checkpointing: Optional[bool] = typer.Option(None),
          deepspeed: Optional[Path] = typer.Option(None, help="A DeepSpeed JSON config, for models too large for one GPU."),
          fsdp: Optional[bool] = typer.Option(None, help="Fully Sharded Data Parallel, under torchrun / accelerate launch."),
          fsdp_config: Optional[Path] = typer.Option(None, help="FSDP's JSON config (version, cpu_offload, min_num_params...)."),
          conversations: bool = typer.Option(False, help="DATA are conversations (`dataengine merge`'s): the loss on every answer."),
          benchmark: Optional[Path] = typer.Option(None, help="SEED-Bench JSON or MMBench TSV whose images are refused."),
          benchmark_image_root: Optional[Path] = typer.Option(None, help="The benchmark's images (default: --image-root)."),
          dialog_benchmark: Optional[Path] = typer.Option(None, help="A dialog benchmark whose images are refused."),
          dialog_image_root: Optional[Path] = typer.Option(None, help="The dialog benchmark's images (default: --image-root)."),
          pool: Optional[Path] = typer.Option(None, help="The images' annotations (JSONL): with them a LLaVA trains on items with "
                                                         "attention grounding, as the loop's tiny model does (train.ground_attention).")):
    """Fine-tune MODEL on DATA (full, or LoRA merged back) and save it to OUT as safetensors. Settings
    default to the config's `train` section (the loop's), or to a preset. With --benchmark (and
    --dialog-benchmark), an item or conversation on one of its pictures (by path or content) stops
    the training before any step, naming the file and the item, as `merge` and `filter` refuse it."""
    from pydantic import ValidationError

    from . import stages
    from .config import problem
    from .records import ImageAnnotation, Sample
    from .train.config import LoraConfig, TrainConfig
    flags = dict(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, sampling=sampling, grad_accum=grad_accum, bf16=bf16,
                 fsdp=fsdp, save_steps=save_steps, gradient_checkpointing=gradient_checkpointing, freeze_vision=freeze_vision,
                 vision_lr=vision_lr, deepspeed=str(deepspeed) if deepspeed else None,
                 fsdp_config=str(fsdp_config) if fsdp_config else None,
                 lora=LoraConfig(r=lora_r, alpha=2 * lora_r) if lora else None)
    flags = {k: v for k, v in flags.items() if v is not None}
    ungrounded = False
    with _errors():
        try:
            if preset:  # a preset is a whole recipe: the flags given beside it win, the config's section does not apply
                cfg = TrainConfig(preset=preset, **flags)
            else:
                base = _config(config).train
                if base.ground_attention is None:  # unset: as the loop trains its tiny LLaVA, where it can
                    groundable = not conversations and _llava_layout(model)
                    ungrounded = groundable and not pool
                    base = base.model_copy(update={"ground_attention": 1.0 if groundable and pool else 0.0})
                cfg = TrainConfig(**(base.model_dump(include=set(TrainConfig.model_fields), exclude_none=True) | flags))
        except ValidationError as e:
            raise DataError(f"train: {problem(e)}") from None
        if conversations:
            from .dialog.conversation import Conversation
            by_file = {f: _read(f, Conversation) for f in data}
        else:
            for f in data:
                _not_conversations(f)
            by_file = {f: _read(f, Sample) for f in data}
        if benchmark or dialog_benchmark:
            _refuse_benchmark_images(by_file, image_root, benchmark, benchmark_image_root, dialog_benchmark, dialog_image_root)
        items = [x for xs in by_file.values() for x in xs]
        try:
            with _progress() as p:
                log = stages.train_model(model, items, image_root, out, cfg, progress=p, log=console.print,
                                         annotations=_read(pool, ImageAnnotation) if pool and cfg.ground_attention else None).log
        except DataError as e:  # an item's problem (empty answer, too long): name its file too
            raise _in_file(e, by_file) from None
    losses = f"; loss {log['losses'][0]:.3f} -> {log['losses'][-1]:.3f}" if log["losses"] else ""
    what = (f"conversations ({sum(len(c.turns) for c in items)} turns)" if conversations else "items")
    console.print(f"trained {log['steps']} steps on {log['samples']} {what}{losses}")
    if ungrounded:
        console.print("[yellow]no --pool: trained without attention grounding, which the loop gives its tiny LLaVA "
                      "(train.ground_attention); give the pool for the loop's training[/yellow]")
    elif pool and not cfg.ground_attention:
        console.print("[yellow]--pool not used: no attention grounding for this training (a preset, conversations, "
                      "a model without LLaVA's layout, or train.ground_attention: 0)[/yellow]")


def _llava_layout(model: Path) -> bool:
    """Whether the checkpoint at `model` is a LLaVA (one image token per patch), by its config.json."""
    from .models.vlm import model_type
    return model_type(model) == "llava"


def _in_file(e: DataError, by_file: dict) -> DataError:
    """`e` with the file of the item or conversation it names ("sample ID: ...", "conversation ID: ...") before it."""
    import re
    m = re.match(r"(?:sample|conversation) (\S+): ", str(e))
    for path, records in by_file.items():
        if m and any(r.id == m.group(1) for r in records):
            return DataError(f"{path}: {e}")
    return e


def _not_conversations(path: Path) -> None:
    """DataError when the JSON lines file at `path` starts with a conversation (`merge`'s), not an item."""
    import json
    try:
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        row = json.loads(first) if first else None
    except (OSError, ValueError):
        return  # reading it properly names the problem
    if isinstance(row, dict) and "turns" in row and "instruction" not in row:
        raise DataError(f"{path}: holds conversations (`merge`'s), not items: add --conversations")


def _refuse_benchmark_images(by_file: dict, image_root: Path, benchmark: Optional[Path], benchmark_image_root: Optional[Path],
                             dialog_benchmark: Optional[Path], dialog_image_root: Optional[Path] = None) -> None:
    """DataError naming the file and the item (a conversation's turn: its item) of the first item
    on a picture of the benchmark (by path or content; or a missing or unreadable picture) or of
    the dialog benchmark: training data that never went through `filter` or `merge` is held to the same rule."""
    from . import stages
    from .dialog.benchmark import dialog_images, read_dialogs
    from .records import Inputs
    guard = None
    if benchmark:
        inputs = Inputs(benchmark, image_root, image_root, image_root, benchmark_image_root or image_root)
        guard = stages.benchmark_guard(stages.read_questions(inputs)[0], inputs)
    refuse = stages.refuse_benchmark_images(guard, dialog_images(read_dialogs(dialog_benchmark)) if dialog_benchmark else set(),
                                            image_root=image_root, dialog_image_root=dialog_image_root)
    for path, records in by_file.items():
        for r in records:
            turns = getattr(r, "turns", None)
            item = turns[0].item if turns else r.id
            if why := refuse(r.image, item):
                what = f"conversation {r.id} (item {item})" if turns else f"item {r.id}"
                raise DataError(f"{path}: {what}: {why} ({r.image}): never trained on")


# ---- evaluate ----

@app.command()
def evaluate(model: str = typer.Option(..., help="A checkpoint folder, or a served model's URL (http://host:8000/v1)."),
             benchmark: Path = typer.Option(..., help="SEED-Bench JSON or MMBench TSV."),
             image_root: Path = typer.Option(..., help="Images (for MMBench: where its embedded images are written)."),
             out: Path = typer.Option(...), config: Optional[Path] = _CONFIG,
             method: Optional[str] = typer.Option(None, help="likelihood (default) or letter"),
             batch_size: Optional[int] = typer.Option(None),
             circular: Optional[bool] = typer.Option(None, help="CircularEval: ask once per rotation of the options (MMBench's way)."),
             held_out: Optional[float] = typer.Option(None, help="Share of each type held out as the report part (config default 0.7; 0: no split)."),
             blind: Optional[bool] = typer.Option(None, help="Also evaluate with grey pictures, into OUT/blind (config default: on)."),
             prompt: Optional[str] = typer.Option(None, help="letter: the options' layout, llava (default) or mmbench."),
             max_new_tokens: Optional[int] = typer.Option(None, help="letter: the reply's length (default 32)."),
             judge: bool = typer.Option(False, help="letter: an LLM names the option of a reply that names none (VLMEvalKit's fallback)."),
             served_model: Optional[str] = _SERVED,
             llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL,
             dtype: Optional[str] = typer.Option(None, help="float32 (default), bfloat16 or float16 (on a GPU)")):
    """Evaluate a model: predictions.jsonl, badcases.jsonl, results.json (and circular.json) in OUT."""
    from . import stages
    from .records import Inputs
    from .report.terminal import l2_table, run_table
    with _errors(), contextlib.ExitStack() as stack:
        cfg = _config(config, evaluate__method=method, evaluate__batch_size=batch_size, evaluate__circular=circular,
                      evaluate__held_out=held_out, evaluate__blind=blind, evaluate__prompt=prompt,
                      evaluate__max_new_tokens=max_new_tokens, evaluate__judge="llm" if judge else None,
                      llm__base_urls=llm_url or None, llm__local=True if llm_local else None,
                      model__dtype={"bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype))
        inputs = Inputs(benchmark, image_root, image_root, image_root, image_root)
        _, questions = stages.read_questions(inputs, cfg.evaluate.circular)
        reused = (out / "results.json").exists()
        with _progress() as p:
            llm = lambda: stack.enter_context(stages.open_llm(cfg.llm, out, out / "llm_cache.sqlite"))  # noqa: E731
            res = stages.evaluate_model(model, questions, image_root, out, cfg, benchmark=benchmark.name, progress=p, llm=llm,
                                        served_name=served_model)
    if reused:
        console.print(f"[yellow]{out}: already evaluated; its results are read back (evaluate into another --out "
                      f"to evaluate again)[/yellow]")
    console.print(run_table([res], [stages.blind_results(out)], name=f"{benchmark.name} ({cfg.evaluate.method})"))
    if scores := stages.circular_summary(out):
        o = scores["overall"]
        console.print(f"{o['questions']} questions: single pass {o['single']:.1%}, circular {o['circular']:.1%} "
                      f"(per category and l2-category in {out / 'circular.json'})")
    if res.per_l2:
        console.print(l2_table(res))
    if res.extraction:
        x = res.extraction
        console.print(f"answers read as a letter: {x['letter']}, by option text (fallback): {x['option']}, "
                      f"by the LLM judge: {x.get('judge', 0)}, unreadable: {x['none']}")


@app.command()
def score(benchmark: Path = typer.Option(..., help="SEED-Bench JSON or MMBench TSV the predictions answer."),
          predictions: Path = typer.Option(..., help="This project's predictions.jsonl, VLMEvalKit's xlsx/tsv/jsonl, or lmms-eval's samples jsonl."),
          out: Path = typer.Option(..., help="An evaluation folder (predictions, bad cases, results) that `plan` reads."),
          image_root: Optional[Path] = typer.Option(None, help="For an MMBench TSV: where its images are written."),
          config: Optional[Path] = _CONFIG, judge: bool = typer.Option(False, help="An LLM names the option of a reply that names none."),
          held_out: Optional[float] = typer.Option(None, help="Share of each type held out as the report part (default 0: "
                                                   "the whole set, as leaderboards report; with --config, the config's)."),
          llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL):
    """Score predictions made elsewhere (no model needed), with VLMEvalKit's reading of replies."""
    if held_out is None and config is None:
        held_out = 0.0
    from . import stages
    from .records import Inputs
    from .report.terminal import l2_table, run_table
    with _errors(), contextlib.ExitStack() as stack:
        cfg = _config(config, evaluate__judge="llm" if judge else None, llm__base_urls=llm_url or None,
                      llm__local=True if llm_local else None, evaluate__held_out=held_out)
        root = image_root or out / "benchmark_images"
        _, questions = stages.read_questions(Inputs(benchmark, root, root, root, root))
        llm = lambda: stack.enter_context(stages.open_llm(cfg.llm, out, out / "llm_cache.sqlite"))  # noqa: E731
        res = stages.score_predictions(questions, predictions, out, cfg, benchmark=benchmark.name, llm=llm)
    console.print(run_table([res], name=f"{benchmark.name} (scored from {predictions.name})"))
    if res.per_l2:
        console.print(l2_table(res))
    if res.circular is not None:
        console.print(f"CircularEval: {res.circular:.1%} of {res.total} questions right in every rotation")
    x = res.extraction
    console.print(f"replies read as a letter: {x['letter']}, by option text: {x['option']}, by the LLM judge: {x['judge']}, "
                  f"unreadable: {x['none']}")
    if x.get("missing"):
        console.print(f"[yellow]{x['missing']} questions have no prediction in {predictions.name}; they count as wrong[/yellow]")


@app.command("mme-eval")
def mme_eval(model: str = typer.Option(..., help="A checkpoint folder, or a served model's URL (http://host:8000/v1)."),
             root: Path = typer.Option(..., help="The MME release folder (one folder per subtask), or VLMEvalKit's MME.tsv."),
             image_root: Optional[Path] = typer.Option(None, help="For MME.tsv: where its images are written."),
             method: str = _YN_METHOD, rule: str = _YN_RULE, served_model: Optional[str] = _SERVED,
             out: Optional[Path] = typer.Option(None, help="Write the scores JSON here.")):
    """MME: answer each yes/no question; acc, acc+ and score per subtask, perception and cognition."""
    from .benchmarks.mme import mme_scores, read_mme
    from .benchmarks.pope import PopeItem, evaluate_pope
    from .models import load_model
    from .records import write_json
    with _errors(), contextlib.ExitStack() as stack:
        items = read_mme(root, image_root)
        asked = [PopeItem(question_id=i, image=it.image, text=it.question, label=it.label) for i, it in enumerate(items)]
        vlm = load_model(model, served_model, stack)
        scores = mme_scores(items, evaluate_pope(vlm, asked, image_root if root.suffix == ".tsv" else root, method=method, rule=rule))
        scores |= {"method": method, "rule": rule if method == "generate" else None}
    if out:
        write_json(out, scores)
    for task, v in scores["subtasks"].items():
        console.print(f"{task:>24}  acc {v['acc']:.3f}  acc+ {v['acc_plus']:.3f}  score {v['score']:.1f}")
    console.print(f"perception {scores['perception']:.1f}  cognition {scores['cognition']:.1f}")


@app.command("pope-build")
def pope_build(pool: Path = typer.Option(..., help="JSONL of image annotations."), out: Path = typer.Option(...),
               split: str = typer.Option("adversarial", help="random, popular or adversarial"),
               per_image: int = typer.Option(3, min=1, help="Objects asked per image, present and absent alike (POPE: 3)."),
               seed: int = typer.Option(0)):
    """Build a POPE split (3 present and 3 absent objects per image) from an annotated pool."""
    from .benchmarks.pope import build_pope, write_pope
    from .records import ImageAnnotation
    with _errors():
        items = build_pope(_read(pool, ImageAnnotation), split, per_image=per_image, seed=seed)
        if not items:
            raise DataError(f"{pool}: no image has {per_image} distinct objects present and {per_image} absent "
                            f"to ask about; try a smaller --per-image")
    write_pope(out, items)
    console.print(f"wrote {len(items)} {split} questions to {out}")


@app.command("pope-eval")
def pope_eval(model: str = typer.Option(..., help="A checkpoint folder, or a served model's URL (http://host:8000/v1)."),
              questions: Path = typer.Option(..., help="POPE JSONL file, or VLMEvalKit's POPE.tsv."),
              image_root: Path = typer.Option(..., help="The images (for a TSV: where its images are written)."),
              method: str = _YN_METHOD, rule: str = _YN_RULE, served_model: Optional[str] = _SERVED,
              out: Optional[Path] = typer.Option(None, help="Write metrics JSON here.")):
    """Answer POPE questions; print accuracy, precision, recall, F1, yes-ratio (per split, for POPE.tsv)."""
    from .benchmarks.pope import evaluate_pope, pope_metrics, read_pope
    from .models import load_model
    from .records import write_json
    with _errors(), contextlib.ExitStack() as stack:
        items = read_pope(questions, image_root)
        try:
            answers = evaluate_pope(load_model(model, served_model, stack), items, image_root, method=method, rule=rule)
        except DataError as e:
            raise DataError(f"{questions}: {e}") from None
    metrics = pope_metrics([i.label for i in items], answers)
    splits = sorted({i.category for i in items if i.category})
    per_split = {s: pope_metrics([i.label for i in items if i.category == s], [a for i, a in zip(items, answers) if i.category == s])
                 for s in splits}
    if out:
        write_json(out, metrics | {"method": method, "rule": rule if method == "generate" else None, "splits": per_split})
    console.print("  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    for s, m in per_split.items():
        console.print(f"{s:>12}: " + "  ".join(f"{k} {v:.3f}" for k, v in m.items()))


@app.command()
def hadpo(model: Path = typer.Option(..., help="The checkpoint to improve (a folder)."),
          config: Optional[Path] = typer.Option(None, help="YAML run config: its data (or world), hadpo and llm sections."),
          run_dir: Path = typer.Option(Path("runs/hadpo"), help="Where the stages' files go; re-run to resume."),
          images: Optional[int] = typer.Option(None, help="Pool images to describe (hadpo.images)."),
          detector: Optional[str] = typer.Option(None, help="grounded or llm (hadpo.detector).")):
    """Hallucination-aware DPO (HA-DPO): describe -> detect -> pair -> DPO -> POPE and SHR before and after."""
    from .hadpo import POPE_SPLITS, check_model, run_hadpo, shr_text
    from .stages import open_llm, resolve_inputs
    with _errors(), contextlib.ExitStack() as stack:
        cfg = _config(config, hadpo__images=images, hadpo__detector=detector)
        check_model(model, run_dir)  # before the world is built into run_dir
        inputs = resolve_inputs(cfg, run_dir)
        client = []

        def llm():
            if not client:
                client.append(stack.enter_context(open_llm(cfg.llm, run_dir, run_dir / "llm_cache.sqlite", log=console.print)))
            return client[0]
        with _progress() as p:
            res = run_hadpo(model, cfg, inputs, run_dir, llm=llm, progress=p, log=console.print)
    from rich.table import Table
    trained = res.get("trained_pairs", res["pairs"])
    made = f" of {res['pairs']} (the rest off-policy)" if trained != res["pairs"] else ""
    table = Table(title=f"Hallucination before and after DPO on {trained} pairs{made} ({res['heldout_images']} held-out images)")
    for col in ("", "SHR", *(f"POPE {s} F1" for s in POPE_SPLITS), *(f"POPE {s} acc" for s in POPE_SPLITS)):
        table.add_column(col, justify="right")
    for when in ("before", "after"):
        m = res[when]
        table.add_row(when, shr_text(m["shr"]), *(f"{m['pope'][s]['f1']:.1%}" for s in POPE_SPLITS),
                      *(f"{m['pope'][s]['accuracy']:.1%}" for s in POPE_SPLITS))
    console.print(table)
    console.print(f"model: {run_dir / 'model'}; pairs: {run_dir / 'pairs.jsonl'}")


# ---- plan, generate, filter, mix ----

@app.command()
def plan(eval_dir: Path = typer.Option(..., "--eval", help="An evaluate output folder."), out: Path = typer.Option(...),
         config: Optional[Path] = _CONFIG, budget: Optional[int] = typer.Option(None),
         strategy: Optional[str] = typer.Option(None, help="error (the paper's v1, default), sqrt-error (v2), progress or uniform"),
         examples: Optional[int] = typer.Option(None, help="Bad cases per type kept as in-context examples."),
         pool: Optional[Path] = typer.Option(None, help="The pool to generate from: types it cannot supply get no items."),
         previous_eval: Optional[Path] = typer.Option(None, help="The evaluation before the last training (for --strategy progress)."),
         previous_plan: Optional[Path] = typer.Option(None, help="The plan the last training followed (for --strategy progress)."),
         seed: int = typer.Option(0)):
    """Adaptive Bad-case Sampling: items per type for the next round, and in-context bad cases.
    A benchmark's categories (MMBench's) are handed to the generator types that write them."""
    from . import stages
    from .records import ImageAnnotation
    from .report.terminal import counts_table
    with _errors():
        cfg = _config(config, sample__budget=budget, sample__strategy=strategy, sample__examples_per_type=examples)
        p = stages.plan_round(eval_dir, out, cfg, seed=seed, pool=_read(pool, ImageAnnotation) if pool else None,
                              previous_eval=previous_eval, previous_plan=previous_plan)
    console.print(counts_table([p]))
    for name, why in p.unavailable.items():
        console.print(f"[yellow]no items for {name}: {why}[/yellow]")


@app.command()
def generate(plan_file: Path = typer.Option(..., "--plan"), pool: Path = typer.Option(..., help="JSONL of image annotations."),
             out: Path = typer.Option(...), config: Optional[Path] = _CONFIG, seed: int = typer.Option(0),
             seen: list[Path] = typer.Option([], help="Training data so far (repeat): its images are not reused for the same type."),
             source: str = typer.Option("generated", help="Provenance written into each item (the loop writes round-<k>)."),
             generator: Optional[str] = typer.Option(None, help="grounded (default), or llm"),
             focus: Optional[float] = typer.Option(None, help="grounded: share of items aimed at the bad cases' answers."),
             llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL,
             prompts: Optional[Path] = typer.Option(None, help="Prompt store from `dataengine ipo` (its best version is used)."),
             image_root: Optional[Path] = typer.Option(None, help="Images, when the LLM is sent them (llm.send_image)."),
             cache: Optional[Path] = typer.Option(None, help="LLM cache (default: beside OUT). A re-run pays no finished call again."),
             oversample: Optional[int] = typer.Option(None, help="Candidates per wanted item (config default: 3; use 1 for an LLM)."),
             max_images: Optional[float] = typer.Option(None, help="Images tried per wanted item (config default: all).")):
    """Generate items per the plan, with the grounded generator or an LLM."""
    from collections import Counter

    from . import stages
    from .llm.prompt import PromptStore
    from .records import ImageAnnotation, Sample
    with _errors(), contextlib.ExitStack() as stack:
        cfg = _config(config, generate__generator=generator, generate__focus=focus, generate__oversample=oversample,
                      generate__max_images=max_images, llm__base_urls=llm_url or None, llm__local=True if llm_local else None)
        the_plan = stages.read_plan(plan_file)
        anns = _read(pool, ImageAnnotation)
        llm = lambda: stack.enter_context(  # noqa: E731 - opened only for the llm generator
            stages.open_llm(cfg.llm, out.parent, cache or out.with_suffix(".llm_cache.sqlite"), log=console.print))
        best = PromptStore(prompts).best() if prompts else None
        g = stages.make_generator(cfg.generate, anns, source, llm=llm, prompt=best, image_root=image_root)
        with _progress() as bar:
            made = stages.generate_items(the_plan, anns, g, out, cfg.generate, seed, seen=_read_all(seen, Sample),
                                         report=out.with_suffix(".report.json"), progress=bar)
    if made.usage:
        console.print(f"LLM: {made.usage.summary(g.client.cfg)}")
    console.print(f"wrote {len(made.items)} items to {out}")
    got = Counter(s.qtype for s in made.items)
    for t, n in sorted(the_plan.counts().items()):
        if got[t] < n:
            console.print(f"[yellow]type {t}: {got[t]} of the {n} items asked for: the pool has no more images that can "
                          f"give one (or the LLM wrote no more usable ones)[/yellow]")


@app.command("filter")
def filter_cmd(inp: Path = typer.Argument(..., help="Generated JSONL."), out: Path = typer.Option(...),
               benchmark: Path = typer.Option(..., help="SEED-Bench JSON or MMBench TSV whose images must stay out."),
               image_root: Path = typer.Option(...), pool: Optional[Path] = typer.Option(None, help="Annotations to verify against."),
               benchmark_image_root: Optional[Path] = typer.Option(None, help="The benchmark's images, if not under IMAGE_ROOT "
                                                                   "(for MMBench: where its images are written)."),
               seen: list[Path] = typer.Option([], help="Training data so far (repeat): the same question on the same image is a duplicate."),
               blind_model: Optional[Path] = typer.Option(None, help="Drop items this model answers right from a grey picture (filter.blind: model)."),
               blind_llm: bool = typer.Option(False, help="Drop items the LLM answers right from the question alone (filter.blind: llm)."),
               llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL,
               config: Optional[Path] = _CONFIG):
    """Drop malformed, wrong, duplicate and benchmark-leaking items; rejected ones go beside OUT."""
    from . import stages
    from .benchmarks import is_mmbench
    from .records import ImageAnnotation, Inputs, Sample
    with _errors(), contextlib.ExitStack() as stack:
        cfg = _config(config, filter__blind="model" if blind_model else "llm" if blind_llm else None,
                      llm__base_urls=llm_url or None, llm__local=True if llm_local else None)
        samples = _read(inp, Sample)
        if not samples:
            raise DataError(f"{inp}: no generated items to filter")
        if is_mmbench(benchmark) and benchmark_image_root is None:
            # Not into IMAGE_ROOT: MMBench's image names (0.jpg, 1.jpg, ...) may be the pool's too.
            raise DataError(f"{benchmark}: an MMBench file needs --benchmark-image-root, a folder for its images")
        inputs = Inputs(benchmark, image_root, pool or inp, inp, benchmark_image_root or image_root)
        bench, _ = stages.read_questions(inputs)
        llm = lambda: stack.enter_context(stages.open_llm(cfg.llm, out.parent, out.with_suffix(".llm_cache.sqlite")))  # noqa: E731
        f = stages.filter_items(samples, out, stages.benchmark_guard(bench, inputs), _read(pool, ImageAnnotation) if pool else None,
                                cfg, seen=_read_all(seen, Sample), blind_model=blind_model, image_root=image_root, llm=llm)
    console.print(f"kept {f.report.kept} of {len(samples)}; dropped {f.report.dropped or 'none'}")
    if f.report.unverified:
        console.print(f"[yellow]{f.report.unverified} kept items are about images the pool does not annotate: "
                      f"not checked against an annotation[/yellow]")


@app.command()
def evolve(items: Path = typer.Argument(..., help="Items to evolve (JSONL of samples, e.g. a round's filtered.jsonl)."),
           pool: Path = typer.Option(..., help="JSONL of the image annotations the items are about."),
           out: Path = typer.Option(..., help="Folder for round_<r>/ (children, verdicts, figures) and evolved.jsonl."),
           rounds: Optional[int] = typer.Option(None, min=1, help="Evolution rounds (default 3)."),
           operator: list[str] = typer.Option([], help="perception, reasoning, interaction (repeat; default all)."),
           generator: Optional[str] = typer.Option(None, help="grounded (default) or llm"),
           judge: Optional[str] = typer.Option(None, help="grounded (default) or llm"),
           share: Optional[float] = typer.Option(None, help="With --mix: the share of ITEMS replaced by evolved descendants."),
           mix: Optional[Path] = typer.Option(None, help="Also write ITEMS with a share replaced by evolved descendants here."),
           prompts: Optional[Path] = typer.Option(None, help="A prompt store from `dataengine ipo --evolve` (its best version is used)."),
           llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL, seed: int = typer.Option(0),
           config: Optional[Path] = _CONFIG):
    """Evolve items into harder, more varied ones (MMEvol): perception, reasoning and format operators,
    each child kept only if the judge finds it more complex and still correct."""
    from . import stages
    from .records import ImageAnnotation, Sample, write_jsonl
    with _errors(), contextlib.ExitStack() as stack:
        cfg = _config(config, evolve__rounds=rounds if rounds is not None else (None if config else 3), evolve__operators=operator or None,
                      evolve__generator=generator, evolve__judge=judge, evolve__share=share,
                      evolve__prompts=str(prompts) if prompts else None,
                      llm__base_urls=llm_url or None, llm__local=True if llm_local else None)
        samples = _read(items, Sample)
        if not samples:
            raise DataError(f"{items}: no items to evolve")
        if share is not None and mix is None:
            raise DataError("--share says how much of ITEMS the --mix file replaces: give --mix too")
        if prompts and "llm" not in (cfg.evolve.generator, cfg.evolve.judge):
            raise DataError(f"{prompts}: a prompt store is for the LLM's evolution: add --generator llm (or --judge llm)")
        llm = lambda: stack.enter_context(stages.open_llm(cfg.llm, out, out / "llm_cache.sqlite", log=console.print))  # noqa: E731
        kept = stages.evolve_items(samples, _read(pool, ImageAnnotation), out, cfg, seed=seed, llm=llm, log=console.print)
        if mix:
            write_jsonl(mix, stages.with_evolved(samples, kept, cfg.evolve.share, seed))
    console.print(f"wrote {len(kept)} evolved items to {out / 'evolved.jsonl'}" + (f"; the mix to {mix}" if mix else ""))


@app.command()
def mix(original: Path = typer.Option(..., help="The original training data (JSONL)."),
        incremental: list[Path] = typer.Option([], help="Kept items of the rounds so far (repeat)."),
        out: Path = typer.Option(...), config: Optional[Path] = _CONFIG,
        fraction: Optional[float] = typer.Option(None, help="Share of the original data replayed (config default: 0.25)."),
        seed: int = typer.Option(0), review: Optional[Path] = _REVIEW):
    """The training set of a round, as the loop makes it: a seeded share of the original data, then the incremental items."""
    from . import stages
    from .records import Sample, write_jsonl
    with _errors():
        cfg = _config(config, train__original_fraction=fraction)
        items = _reviewed(_read_all(incremental, Sample), review)
        data = stages.training_mix(_read(original, Sample), items, cfg.train.original_fraction, seed)
    write_jsonl(out, data)
    console.print(f"wrote {len(data)} items to {out}")


# ---- the LLM and prompt optimization ----

@app.command()
def ipo(pool: Path = typer.Option(..., help="JSONL of image annotations to generate from."),
        out: Path = typer.Option(..., help="Folder for prompts.jsonl (every version) and each version's items and failures."),
        config: Optional[Path] = _CONFIG, llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL,
        image_root: Optional[Path] = typer.Option(None), review: str = typer.Option("auto", help="auto (the annotation verifier), human (at this terminal) or page "
                                                   "(in `dataengine review`'s IPO tab; verdicts in OUT's parent/review.sqlite)"),
        rounds: Optional[int] = typer.Option(None), per_type: Optional[int] = typer.Option(None),
        target: Optional[float] = typer.Option(None), types: Optional[str] = typer.Option(None, help="e.g. 3,5,9 (default: all)"),
        evolve: Optional[Path] = typer.Option(None, help="Optimize the evolution prompt instead, evolving items of this JSONL."),
        seed: int = typer.Option(0)):
    """Interactive Prompt Optimization: generate, review the failures, let the LLM revise the prompt; repeat."""
    from . import stages
    from .llm.ipo import REVIEWERS
    from .records import ImageAnnotation

    def accept(current: str, proposed: str) -> str | None:
        answer = typer.prompt("accept this rewrite? [a]ccept / [e]dit / [r]eject", default="a")
        if answer.startswith("e"):
            return typer.edit(proposed) or proposed
        return proposed if answer.startswith("a") else None

    with _errors():
        judge = REVIEWERS.get(review)
        if review == "page":
            from .review.store import DB_NAME
            judge = judge(out.parent / DB_NAME, show=console.print)
            console.print(f"judge each prompt version's items in the review page: dataengine review {out.parent}"
                          + ("" if out.name == "ipo" else f" --ipo {out}"), highlight=False)
        try:
            qtypes = [int(t) for t in types.split(",")] if types else None
        except ValueError:
            raise DataError(f"--types {types!r}: give type numbers separated by commas, e.g. 3,5,9") from None
        cfg = _config(config, ipo__rounds=rounds, ipo__per_type=per_type, ipo__target=target, ipo__types=qtypes,
                      llm__base_urls=llm_url or None, llm__local=True if llm_local else None)
        anns = _read(pool, ImageAnnotation)
        with stages.open_llm(cfg.llm, out, out / "llm_cache.sqlite", log=console.print) as client:
            if evolve:
                from .records import Sample
                res = stages.optimize_evolve_prompt(client, _read(evolve, Sample), anns, out, cfg, seed=seed, judge=judge,
                                                    accept=None if review == "auto" else accept, log=console.print)
            else:
                res = stages.optimize_prompt(client, anns, out, cfg.ipo, seed=seed, image_root=image_root, judge=judge,
                                             accept=None if review == "auto" else accept, log=console.print)
    from rich.table import Table
    t = Table(title="prompt versions")
    for col in ("version", "parent", "correctness", "judged"):
        t.add_column(col, justify="right")
    for v in res.versions:
        t.add_row(f"v{v.version}", f"v{v.parent}" if v.parent else "-", f"{v.correctness:.0%}" if v.correctness is not None else "-", str(v.judged))
    console.print(t)
    console.print(f"stopped: {res.stopped}; best v{res.best.version}; `dataengine {'evolve' if evolve else 'generate'} "
                  f"--prompts {out / 'prompts.jsonl'}` uses it")


@app.command("llm-serve")
def llm_serve(log: Path = typer.Option(Path("llm_server.log"))):
    """Serve the packaged Gemma-3-270M on a local OpenAI-compatible server until Ctrl-C."""
    import time

    from .llm.server import LocalLLM
    with _errors():
        try:
            with LocalLLM(log) as url:
                console.print(f"serving at {url} (model gemma-3-270m); Ctrl-C stops it")
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            pass


# ---- data in and out ----

@app.command()
def pool(out: Path = typer.Option(..., help="JSONL of ImageAnnotation records, for generate / ipo / pope-build."),
         image_root: Path = typer.Option(..., help="The folder the pool's image paths are relative to (training reads them from there)."),
         vg: Optional[Path] = typer.Option(None, help="Visual Genome folder (image_data.json, objects.json, ...)."),
         coco_captions: Optional[Path] = typer.Option(None, help="COCO captions file, e.g. captions_train2017.json."),
         coco_instances: Optional[Path] = typer.Option(None, help="COCO instances file, e.g. instances_train2017.json (needed with --coco-captions)."),
         coco_image_dir: str = typer.Option("", help="COCO images' folder inside the image root, e.g. train2017."),
         lvis: Optional[Path] = typer.Option(None, help="LVIS annotations for the same images (more names, negatives, not-exhaustive marks)."),
         captions: Optional[Path] = typer.Option(None, help='A folder\'s JSONL: {"image": path under the image root, "caption": str '
                                                 '(or "captions": a list), optional "texts": a list of {"text", "bbox"}} per line.'),
         limit: Optional[int] = typer.Option(None, help="Visual Genome: stop after this many images (streamed).")):
    """Turn Visual Genome, COCO (+LVIS) or a captioned folder of images into an annotation pool."""
    from collections import Counter

    from .pools import read_coco, read_folder, read_visual_genome
    from .records import write_json, write_jsonl
    report: Counter = Counter()
    with _errors():
        if sum(x is not None for x in (vg, coco_captions, captions)) != 1:
            raise DataError("give one source: --vg, --coco-captions with --coco-instances, or --captions")
        if vg:
            anns = list(read_visual_genome(vg, image_root, limit=limit, report=report))
        elif coco_captions:
            if coco_instances is None:
                raise DataError("--coco-instances is needed with --coco-captions")
            anns = read_coco(coco_captions, coco_instances, image_root, coco_image_dir, lvis, report=report)
        else:
            anns = read_folder(image_root, captions, report=report)
    left_out = ", ".join(f"{what}: {n}" for what, n in sorted(report.items()))
    if not anns:
        _fail(DataError(f"{out}: no image of the source could be kept, so no pool was written"
                        + (f" (left out: {left_out})" if left_out else "")))
    if report:
        console.print(f"left out: {left_out}")
    write_jsonl(out, anns)
    write_json(out.with_suffix(".report.json"), dict(report))
    console.print(f"wrote {len(anns)} annotated images to {out}")


@app.command()
def export(inp: Path = typer.Argument(...), out: Path = typer.Option(...),
           to: str = typer.Option("llava", help="llava (conversation JSON) or hf (Parquet shards with the images)"),
           form: str = typer.Option("both", help="llava: direct, choice or both"),
           image_root: Optional[Path] = typer.Option(None, help="Where the images are (hf: needed; llava: each picture is opened first)"),
           review: Optional[Path] = _REVIEW):
    """Export samples to the LLaVA conversation JSON, or to a Hugging Face dataset with the images."""
    from .export import FORMS, TARGETS
    from .records import Sample
    with _errors():
        target, _ = TARGETS.get(to), FORMS.get(form)
        if to == "hf" and image_root is None:
            raise DataError("--image-root is needed for --to hf")
        target(_reviewed(_read(inp, Sample), review), out, form, image_root)
    console.print(f"wrote {out}")


@app.command("import")
def import_cmd(inp: Path = typer.Argument(..., help="A LLaVA conversation JSON, or a folder written by `export --to hf`."),
               out: Path = typer.Option(..., help="Sample JSONL."),
               image_root: Optional[Path] = typer.Option(None, help="hf: where to write the images back"),
               conversations: bool = typer.Option(False, help="Multi-turn conversations (`merge --llava / --hf`), into Conversation JSONL.")):
    """Load exported data back into Sample records (or, with --conversations, Conversation records)."""
    from .dialog import export as dexport
    from .export import from_llava, import_hf
    from .records import write_jsonl
    with _errors():
        if inp.is_dir():
            if image_root is None:
                raise DataError("--image-root is needed to write a dataset's images back")
            samples = (dexport.import_hf if conversations else import_hf)(inp, image_root)
        else:
            samples = (dexport.from_llava if conversations else from_llava)(inp)
    write_jsonl(out, samples)
    console.print(f"wrote {len(samples)} {'conversations' if conversations else 'samples'} to {out}")


@app.command()
def report(run_dir: Path = typer.Argument(Path("runs/default")),
           compare: list[Path] = typer.Option([], help="Other run directories whose curves are overlaid (--html)."),
           html: Optional[Path] = typer.Option(None, help="Also write one self-contained HTML report (plots, examples, ledger)."),
           image_root: Optional[Path] = typer.Option(None, help="--html: the pictures, for thumbnails (default: the run's world)")):
    """Print the accuracy table of a run, round by round, and the items ABS planned per type."""
    from .report.terminal import (counts_table, evolution_line, hallucination_lines, run_evolution, run_plans, run_report,
                                  run_results)
    results = run_results(run_dir)
    if not results:
        _fail(DataError(f"{run_dir}: no evaluated rounds here"))
    console.print(run_report(run_dir, results))
    if plans := run_plans(run_dir)[:len(results) - 1]:
        console.print(counts_table(plans))
    for line in hallucination_lines(run_dir):
        console.print(line, highlight=False)
    for k, stats in run_evolution(run_dir).items():
        console.print(evolution_line(k, stats), highlight=False, soft_wrap=True)
    if html:
        from .report.html import write_html
        with _errors():
            console.print(f"wrote {write_html([run_dir, *compare], html, image_root)}")


# ---- multi-round dialogs ----

@app.command()
def merge(data: list[Path] = typer.Argument(..., help="Item JSONL files (generated, filtered, starter, a round's mix)."),
          out: Path = typer.Option(..., help="Conversation JSONL."), config: Optional[Path] = _CONFIG,
          pool: Optional[Path] = typer.Option(None, help="Image annotations, for the turns --pool-turns names."),
          pool_turns: Optional[str] = typer.Option(None, help="caption,region,grounding,existence,followup (config: merge.pool)"),
          max_turns: Optional[int] = typer.Option(None, help="Turns a conversation at most (config default 8); a follow-up chain longer than that stays whole, alone."),
          form: Optional[str] = typer.Option(None, help="Items with options: letter, word or mixed (default)."),
          lead: Optional[str] = typer.Option(None, help="What opens a conversation: any turn (default), or an item while the image has one (the rest shuffled)."),
          seed: int = typer.Option(0),
          benchmark: Optional[Path] = typer.Option(None, help="SEED-Bench JSON or MMBench TSV whose images are refused."),
          image_root: Optional[Path] = typer.Option(None, help="The items' images (with --benchmark; needed for --hf)."),
          benchmark_image_root: Optional[Path] = typer.Option(None, help="The benchmark's images (default: --image-root)."),
          dialog_benchmark: Optional[Path] = typer.Option(None, help="A dialog benchmark whose images are refused."),
          dialog_image_root: Optional[Path] = typer.Option(None, help="The dialog benchmark's images (default: --image-root)."),
          llava: Optional[Path] = typer.Option(None, help="Also export the conversations as LLaVA multi-turn JSON here."),
          hf: Optional[Path] = typer.Option(None, help="Also export them as a Hugging Face dataset (Parquet) here.")):
    """Merge items per image into multi-round conversations, each turn with its format instruction (after
    arXiv 2401.08968). An item on a benchmark image stops the merge, naming it."""
    from . import stages
    from .dialog import export as dexport
    from .dialog.benchmark import dialog_images, read_dialogs
    from .records import ImageAnnotation, Inputs, Sample
    with _errors():
        kinds = [k.strip() for k in pool_turns.split(",") if k.strip()] if pool_turns is not None else None
        cfg = _config(config, merge__pool=kinds, merge__max_turns=max_turns, merge__form=form, merge__lead=lead)
        if cfg.merge.pool and pool is None:
            raise DataError("--pool is needed for the annotation turns "
                            + ("--pool-turns names" if kinds else "the config's merge.pool names"))
        if pool is not None and not cfg.merge.pool:
            raise DataError("--pool gives no turns without --pool-turns (caption,region,grounding,existence,followup)")
        guard = None
        if benchmark:
            if image_root is None:
                raise DataError("--image-root is needed with --benchmark")
            inputs = Inputs(benchmark, image_root, image_root, image_root, benchmark_image_root or image_root)
            guard = stages.benchmark_guard(stages.read_questions(inputs)[0], inputs)
        refused = dialog_images(read_dialogs(dialog_benchmark)) if dialog_benchmark else set()
        conversations = stages.merge_conversations(_read_all(data, Sample), out, cfg, seed, _read(pool, ImageAnnotation) if pool else None,
                                                   refuse=stages.refuse_benchmark_images(guard, refused, image_root=image_root,
                                                                                         dialog_image_root=dialog_image_root))
        if llava:
            dexport.export_llava(conversations, llava, image_root)
        if hf:
            if image_root is None:
                raise DataError("--image-root is needed for --hf")
            dexport.export_hf(conversations, image_root, hf)
    turns = sum(len(c.turns) for c in conversations)
    console.print(f"wrote {len(conversations)} conversations ({turns} turns) to {out}")


@app.command("dialog-bench")
def dialog_bench(out: Path = typer.Argument(..., help="The dialog benchmark JSON to write."),
                 image_root: Path = typer.Option(..., help="Where its pictures are rendered (under dialog/)."),
                 n: int = typer.Option(200, min=1, help="Dialogs (one per picture)."), seed: int = typer.Option(0),
                 size: Optional[int] = typer.Option(None, min=32, help="Picture side in pixels (default: the config's world.image_size)."),
                 config: Optional[Path] = typer.Option(None, help="Run config: its world's image_size and cooccurrence.")):
    """Build a multi-round dialog benchmark on held-out scenes of the synthetic world: later turns refer
    back to earlier answers, each turn with a format instruction. The settings that made the pictures
    are kept beside them (dialog/made.json); a folder made with others is refused."""
    from .dialog.benchmark import build_dialog_benchmark
    with _errors():
        world = _config(config).world
        dialogs = build_dialog_benchmark(image_root, out, n=n, seed=seed, size=size or world.image_size,
                                         cooccurrence=world.cooccurrence)
    console.print(f"wrote {len(dialogs)} dialogs ({sum(len(d.turns) for d in dialogs)} turns) to {out}")


@app.command("dialog-eval")
def dialog_eval(model: Path = typer.Option(..., help="A checkpoint folder."),
                dialogs: Path = typer.Option(..., help="A dialog benchmark JSON (`dataengine dialog-bench`)."),
                image_root: Path = typer.Option(...), out: Path = typer.Option(..., help="Folder for predictions.jsonl, results.json."),
                batch_size: int = typer.Option(16, min=1), max_new_tokens: int = typer.Option(24, min=1),
                grade: bool = typer.Option(False, help="Grade open-ended sentence answers 0-1 with the LLM (MM-Vet's grader)."),
                llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL, config: Optional[Path] = _CONFIG):
    """Ask a model every dialog turn by turn, its own answers kept in the conversation; print accuracy
    per turn and per format, and format compliance. A finished evaluation in OUT is read back; a
    killed one resumes, keeping the dialogs it finished."""
    from . import stages
    from .dialog.benchmark import open_ended, read_dialogs
    from .dialog.judge import llm_grader
    with _errors(), contextlib.ExitStack() as stack:
        cfg = _config(config, llm__base_urls=llm_url or None, llm__local=True if llm_local else None)
        if grade and not open_ended(read_dialogs(dialogs)):
            console.print(f"[yellow]{dialogs}: no open-ended turn to grade; --grade ignored[/yellow]", highlight=False)
            grade = False
        grader = llm_grader(stack.enter_context(stages.open_llm(cfg.llm, out, out / "llm_cache.sqlite"))) if grade else None
        figures = stages.evaluate_dialog_model(model, dialogs, image_root, out, batch_size, max_new_tokens, grader)
    if figures.get("ungraded"):
        console.print(f"[yellow]{figures['ungraded']} open-ended turns could not be graded (no usable grade from the LLM): "
                      f"left out of the accuracy; run again to grade them[/yellow]", highlight=False)
    console.print(f"{figures['dialogs']} dialogs, {figures['turns']} turns: accuracy {figures['accuracy']:.1%}, "
                  f"format compliance {figures['compliance']:.1%}, whole dialogs right {figures['whole_dialogs']:.1%}")
    for t, f in figures["per_turn"].items():
        console.print(f"  turn {t}: accuracy {f['accuracy']:.1%}, compliance {f['compliance']:.1%} ({f['n']})")
    for k, f in figures["per_format"].items():
        console.print(f"  {k:>8}: accuracy {f['accuracy']:.1%}, compliance {f['compliance']:.1%} ({f['n']})")


@app.command()
def review(run_dir: Path = typer.Argument(..., help="The run directory whose items to review."),
           host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback only unless you say otherwise)."),
           port: int = typer.Option(8765),
           image_root: Optional[Path] = typer.Option(None, help="The pictures (default: the run config's, or its world's)."),
           ipo: Optional[Path] = typer.Option(None, help="The IPO folder (default: RUN/ipo)."),
           check: bool = typer.Option(False, "--check", help="Check the run directory and exit, without serving.")):
    """A local web page to page through each round's generated, kept, rejected and evolved items, with
    their pictures and boxes, and accept, reject or edit them; decisions go to RUN/review.sqlite and take
    effect in the loop's next training mix, `mix --review` and `export --review`."""
    from .review.app import create_app, serve
    with _errors():
        if check:
            app_ = create_app(run_dir, image_root, ipo)
            view = app_.state.view
            console.print(f"{run_dir}: rounds {', '.join(map(str, view.rounds())) or 'none'}; "
                          f"{len(view.ipo_versions())} IPO prompt versions; decisions in {app_.state.store.path}", highlight=False)
            return
        serve(run_dir, host, port, image_root, ipo, log=lambda m: console.print(m, highlight=False))


def main() -> None:
    try:
        app()
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    # Under torchrun the Trainer joins a gloo group; one left for interpreter exit to tear down
    # can abort the process ("terminate called without an active exception") after its work is done.
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
