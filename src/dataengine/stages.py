"""The library API: one function per stage of the loop, over files and configs.

The `dataengine` commands and the loop's rounds both call these, so a stage run alone and the same
stage inside the loop do the same thing with the same settings. Each function reads its inputs,
writes its outputs (atomically) and returns what it made; none prints.

    inputs = resolve_inputs(cfg, run_dir)                          # the files a run reads
    vlm = base_model(cfg, inputs, original, model_dir)             # round 0 of the embedded default
    result = evaluate_model(model_dir, questions, inputs, eval_dir, cfg)
    plan = plan_round(eval_dir, plan_json, cfg, seed, pool)        # ABS
    made = generate_items(plan, pool, generator, generated_jsonl, cfg.generate, seed, seen)
    kept = filter_items(made.items, filtered_jsonl, guard, pool, cfg, seen)
    data = training_mix(original, incremental, cfg.train.original_fraction, seed)
    data = merge_conversations(data, conversations_jsonl, cfg, seed, pool, refuse)   # train.conversation: merged
    train_model(model_dir, data, inputs.image_root, next_model_dir, cfg.training(), annotations=pool)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from rich.progress import Progress

from .benchmarks import is_mmbench, read_benchmark
from .benchmarks.mmbench import circular, circular_scores, generator_types
from .config import GenerateConfig, IPOConfig, RunConfig
from .embed import get_embedder
from .errors import DataError
from .evaluate import load_results, run_evaluate
from .filter import BenchmarkGuard, FilterReport, filter_samples
from .generate import GENERATORS, Generator, GroundedGenerator, LLMGenerator, generate
from .llm.client import LLMClient, LLMConfig, Usage
from .qtypes import Vocabulary, unavailable
from .records import (
    EvalResult,
    ImageAnnotation,
    Inputs,
    Prediction,
    Question,
    Sample,
    read_jsonl,
    differs,
    read_text,
    write_json,
    write_jsonl,
)
from .sample import Plan, TypeStats, plan, to_generator_types
from .train.config import TrainConfig
from .world import render as world

Log = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


# ---- inputs ----

def resolve_inputs(cfg: RunConfig, run_dir: str | Path) -> Inputs:
    """The files a run reads: those `cfg.data` names, or the synthetic world built under run_dir/world."""
    from .world.build import build_world
    d, run_dir = cfg.data, Path(run_dir)
    if not any([d.benchmark, d.pool, d.original, d.image_root]):
        return build_world(cfg, run_dir / "world")
    if d.benchmark_image_root:
        bench_images = Path(d.benchmark_image_root)
    elif is_mmbench(d.benchmark):
        bench_images = run_dir / "benchmark_images"  # its own folder: MMBench's image names (0.jpg, ...) would clash
    else:
        bench_images = Path(d.image_root)
    return Inputs(Path(d.benchmark), Path(d.image_root), Path(d.pool), Path(d.original), bench_images)


def read_questions(inputs: Inputs, circular_eval: bool = False) -> tuple[list[Question], list[Question]]:
    """The benchmark's questions, and those asked: each once, or (CircularEval) once per rotation of
    its options; the rotations share the question's type, so ABS plans from them as from single answers."""
    benchmark = read_benchmark(inputs.benchmark, inputs.benchmark_image_root)
    return benchmark, circular(benchmark) if circular_eval else benchmark


def vocabulary(pool: list[ImageAnnotation]) -> Vocabulary:
    """The words wrong options are drawn from: the pool's own; the synthetic world's for its pool."""
    return Vocabulary.from_pool(pool, base=world.VOCABULARY)


# ---- the LLM ----

@contextlib.contextmanager
def open_llm(cfg: LLMConfig, log_dir: str | Path, cache: str | Path | None, log: Log = _quiet) -> Iterator[LLMClient]:
    """An LLM client for the block: the servers `cfg.base_urls` names, or (with `cfg.local`) the
    packaged Gemma-3-270M served on loopback until the block ends. Answers are cached in `cache`."""
    from .llm.server import LocalLLM, local_config
    with contextlib.ExitStack() as stack:
        if cfg.local:
            url = stack.enter_context(LocalLLM(Path(log_dir) / "llm_server.log"))
            cfg = local_config(cfg).model_copy(update={"base_urls": [url]})
            log(f"local LLM ({cfg.model}) serving at {url}")
        client = LLMClient(cfg, cache_path=cache, notify=log)
        stack.callback(client.close)
        yield client


def optimize_prompt(client: LLMClient, pool: list[ImageAnnotation], out: str | Path, cfg: IPOConfig, seed: int = 0,
                    image_root: str | Path | None = None, judge=None, accept=None, log: Log = _quiet):
    """Interactive Prompt Optimization into `out` (prompts.jsonl and each version's items and
    failures); resumes from the stored versions. Returns the IPO result (versions, best, why it stopped)."""
    from .llm.ipo import auto_judge, optimize
    return optimize(client, pool, out, rounds=cfg.rounds, target=cfg.target, per_type=cfg.per_type, qtypes=cfg.types,
                    clarify=cfg.clarify, judge=judge or auto_judge, accept=accept, log=log, seed=seed,
                    image_root=str(image_root) if image_root else None)


# ---- plan (ABS) ----

def plan_round(eval_dir: str | Path, out: str | Path, cfg: RunConfig, seed: int,
               pool: list[ImageAnnotation] | None = None, previous_eval: str | Path | None = None,
               previous_plan: str | Path | None = None) -> Plan:
    """Adaptive Bad-case Sampling from an evaluation folder (results.json, badcases.jsonl) into `out`:
    items per type and in-context bad cases, over the benchmark's own types (their diagnosis part),
    then handed to the generator types that write them (`generate.type_map`). With `pool`, the types
    the pool cannot supply get no items and say why (`plan.unavailable`), and their share goes to the
    others. With the evaluation before the last training (`previous_eval`) and the plan that training
    followed (`previous_plan`), history-aware strategies see each type's change and items."""
    eval_dir = Path(eval_dir)
    res = load_results(eval_dir).part("diagnosis")
    if not res.per_type:
        raise DataError(f"{eval_dir / 'results.json'}: no question in the diagnosis part to plan from "
                        f"(evaluate.held_out holds every question out)")
    bad = diagnosis_badcases(eval_dir)
    s = cfg.sample
    names = {t: r.name for t, r in res.per_type.items()}
    stats = None
    if previous_eval and previous_plan:
        before, given = load_results(previous_eval).part("diagnosis"), read_plan(previous_plan)
        stats = {t: TypeStats(accuracy=r.accuracy, previous=before.per_type[t].accuracy if t in before.per_type else None,
                              items=given.types[t].count if t in given.types else 0, questions=r.total)
                 for t, r in res.per_type.items()}
    the_plan = plan(res.accuracies(), bad, s.budget, s.strategy, s.examples_per_type, s.dedup_threshold,
                    seed=seed, embedder=get_embedder(cfg.embed.model), names=names, stats=stats)
    types = generator_types(names, cfg.generate.type_map)
    missing = unavailable(pool, vocabulary(pool), {g for g in types.values() if g}) if pool else {}
    the_plan = to_generator_types(the_plan, types, missing)
    write_json(out, the_plan)
    return the_plan


def diagnosis_badcases(eval_dir: str | Path) -> list[Prediction]:
    """The wrong answers planning may see: those of the diagnosis part (all, when not split)."""
    return [p for p in read_jsonl(Path(eval_dir) / "badcases.jsonl", Prediction) if p.part != "report"]


def read_plan(path: str | Path) -> Plan:
    """A plan file: ABS's, or one written by hand (`{"types": {"4": {"qtype": 4, "count": 300}}}`)."""
    from pydantic import ValidationError

    from .config import problem
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: plan file not found")
    try:
        the_plan = Plan.model_validate_json(read_text(path))
    except ValidationError as e:
        raise DataError(f"{path}: {problem(e)}") from None
    from .qtypes import QUESTION_TYPES
    for t, g in the_plan.generator_types().items():
        if g not in QUESTION_TYPES:
            raise DataError(f"{path}: types.{t}: no generator writes question type {g} (SEED-Bench types 1-9)")
    if the_plan.budget > 0 and not any(the_plan.counts().values()):
        raise DataError(f"{path}: asks for no items")
    if not the_plan.types:
        raise DataError(f"{path}: asks for no items (no types)")
    return the_plan


# ---- generate ----

def make_generator(cfg: GenerateConfig, pool: list[ImageAnnotation], source: str, llm: Callable[[], LLMClient] | None = None,
                   prompt=None, image_root: str | Path | None = None) -> Generator:
    """The generator `cfg.generator` names: grounded (wrong options from the pool's words), or the LLM
    (`llm()` opens the client, `prompt` is a prompt version, None for the template's)."""
    kind = GENERATORS.get(cfg.generator)
    if kind is GroundedGenerator:
        return GroundedGenerator(vocabulary(pool), focus=cfg.focus, source=source)
    from .llm.prompt import prompt_for
    if llm is None:
        raise DataError("the llm generator needs an LLM: set llm.base_urls or llm.local in the config, or --llm-url / --llm-local")
    return LLMGenerator(llm(), prompt_for(prompt, cfg.template), source=source, image_root=str(image_root) if image_root else None)


def select_images(the_plan: Plan, pool: list[ImageAnnotation], badcases: list[Prediction], cfg: RunConfig, seed: int,
                  pool_embeddings=None) -> dict[int, list[int]] | None:
    """Per generator type, the order to try pool images in: half most like the type's bad cases, half
    at random (`generate.selection: similar`, paper v1); None for random order. `pool_embeddings`
    may be given to avoid embedding the pool again."""
    g = cfg.generate
    if g.selection == "random":
        return None
    from .embed import AnnotationText, similar_and_random
    text = get_embedder(cfg.embed.model)
    if text is None:
        raise DataError("generate.selection 'similar' needs an embedding model: set embed.model: minilm")
    images = AnnotationText(text)
    pool_emb = pool_embeddings if pool_embeddings is not None else images.embed_images(pool)
    to_generator = the_plan.generator_types()
    order = {}
    for t, n in the_plan.counts().items():
        queries = images.embed_queries([p for p in badcases if to_generator.get(p.qtype) == t])
        n_similar = math.ceil(n * g.oversample * (g.max_images or 1) / 2)
        order[t] = similar_and_random(pool_emb, queries, n_similar, seed=seed + t)
    return order


@dataclass
class Generated:
    items: list[Sample]
    usage: Usage | None = None  # what the LLM spent on them (None for a generator without one)


def generate_items(the_plan: Plan, pool: list[ImageAnnotation], generator: Generator, out: str | Path, cfg: GenerateConfig,
                   seed: int, seen: list[Sample] = (), order: dict[int, list[int]] | None = None,
                   report: str | Path | None = None, progress: Progress | None = None) -> Generated:
    """Items per the plan into `out` (JSON lines), never on an image `seen` items already use for the
    same type. An LLM generator's requests, cache hits, retries, tokens, cost and its items, skips and
    malformed answers per type go to `report`."""
    used: dict[int, set[str]] = {}
    for s in seen:
        used.setdefault(s.qtype, set()).add(s.image)
    client = getattr(generator, "client", None)
    before = dict(client.usage.__dict__) if client else {}
    items = generate(the_plan.counts(), pool, generator, the_plan.examples(), seed=seed, exclude_images=used,
                     oversample=cfg.oversample, progress=progress, order=order, max_images=cfg.max_images)
    usage = None
    if isinstance(generator, LLMGenerator):
        usage = Usage(**{f: v - before.get(f, 0) for f, v in client.usage.__dict__.items()})
        if report:
            write_json(report, {"generator": generator.name, "usage": usage.as_dict(client.cfg),
                                "outcomes": {t: dict(c) for t, c in sorted(generator.outcomes.items())},
                                "problems": generator.problems})
    write_jsonl(out, items)
    return Generated(items, usage)


# ---- filter ----

def benchmark_guard(benchmark: list[Question], inputs: Inputs) -> BenchmarkGuard:
    return BenchmarkGuard(benchmark, inputs.image_root, inputs.benchmark_image_root)


@dataclass
class Filtered:
    kept: list[Sample]
    report: FilterReport


def filter_items(generated: list[Sample], out: str | Path, guard: BenchmarkGuard | None, pool: list[ImageAnnotation] | None,
                 cfg: RunConfig, seen: list[Sample] = (), rejected: str | Path | None = None,
                 report: str | Path | None = None, blind_model: str | Path | None = None, image_root: str | Path | None = None,
                 llm: Callable[[], LLMClient] | None = None) -> Filtered:
    """Keep the well-formed, correct (by the pool's annotation), new items that are not about a
    benchmark image, into `out`; the dropped ones, each with its reason, into `rejected`; counts per
    reason and type into `report`. `seen`: items already in the training data (their questions are
    duplicates). With `filter.blind`, items answered without the image are dropped too: by the
    checkpoint `blind_model` (its images under `image_root`), or by the LLM `llm()` opens."""
    out = Path(out)
    f = cfg.filter
    anns = {a.image: a for a in pool} if pool else None
    blind = None
    if f.blind == "model":
        from .filter import answered_blind
        from .models.vlm import VLM
        if blind_model is None or image_root is None:
            raise DataError("filter.blind 'model' needs the model the round trains from and its image root")
        blind = answered_blind(VLM.load(blind_model), image_root, cfg.evaluate.batch_size)
    elif f.blind == "llm":
        from .filter import answered_by_llm
        if llm is None:
            raise DataError("filter.blind 'llm' needs an LLM: set llm.base_urls or llm.local")
        blind = answered_by_llm(llm())
    kept, dropped, rep = filter_samples(generated, guard, anns, seen=list(seen), embedder=get_embedder(cfg.embed.model),
                                        similarity=f.similarity, scope=f.scope, drop_unverified=f.unverifiable == "drop",
                                        vocab=vocabulary(pool) if pool else None, blind=blind)
    write_jsonl(rejected or out.with_name(out.stem + ".rejected.jsonl"),
                [s.model_copy(update={"source": f"{s.source} | {r}"}) for s, r in dropped])
    write_json(report or out.with_name(out.stem + ".report.json"), rep)
    write_jsonl(out, kept)
    return Filtered(kept, rep)


def edit_check(guard: BenchmarkGuard | None, pool: list[ImageAnnotation] | None,
               cfg: RunConfig) -> Callable[[Sample, list[Sample]], str]:
    """The filter on one item a person edited (`review.store.apply`), beside the items `seen` it would
    join: "" when it passes, else the reason. The checks of `filter_items` but the embedding
    near-duplicate and blind ones (they judge a set, or need a model)."""
    anns = {a.image: a for a in pool} if pool else None
    vocab = vocabulary(pool) if pool else None

    def check(s: Sample, seen: list[Sample] = ()) -> str:
        try:
            _, dropped, _ = filter_samples([s], guard, anns, seen=[x for x in seen if x.id != s.id],
                                           drop_unverified=cfg.filter.unverifiable == "drop", vocab=vocab)
        except DataError as e:
            return str(e)
        return dropped[0][1] if dropped else ""
    return check


# ---- evolve ----

def evolve_items(items: list[Sample], pool: list[ImageAnnotation], out: str | Path, cfg: RunConfig, rounds: int | None = None,
                 seed: int = 0, llm: Callable[[], LLMClient] | None = None, log: Log = _quiet) -> list[Sample]:
    """Evolve `items` (`evolve.rounds.evolve`) by the config's `evolve` section into the folder `out`;
    return the kept children of every round. Resumes at the round a killed run was in."""
    from .evolve.llm import LLMEvolver, load_prompts
    from .evolve.rounds import evolve
    from .llm.prompt import PromptStore
    e = cfg.evolve
    best = PromptStore(e.prompts).best() if e.prompts else None
    if e.prompts and best is None:
        raise DataError(f"{e.prompts}: no measured prompt version (run `dataengine ipo --evolve ITEMS` first)")
    prompts = load_prompts(best.template if best else e.prompt)
    evolver = LLMEvolver(llm(), prompts, rules=best.rules if best else None) if (e.generator == "llm" or e.judge == "llm") and llm else None
    if (e.generator == "llm" or e.judge == "llm") and evolver is None:
        raise DataError("evolve.generator or evolve.judge is llm, but no LLM is configured (the llm section)")
    kept, _ = evolve(items, pool, out, rounds=e.rounds if rounds is None else rounds, operators=e.operators,
                     vocab=vocabulary(pool), llm=evolver, generator=e.generator, judge=e.judge,
                     embedder=get_embedder(cfg.embed.model), seed=seed, log=log)
    return kept


def optimize_evolve_prompt(client: LLMClient, items: list[Sample], pool: list[ImageAnnotation], out: str | Path, cfg: RunConfig,
                           seed: int = 0, judge=None, accept=None, log: Log = _quiet):
    """IPO on the evolution prompt (`cfg.evolve.prompt`): each version evolves the same
    `ipo.per_type` seed items per operator, drawn from `items`, and is judged like generation's
    (the annotation verifier, a person at the terminal or in the review page)."""
    from .evolve.llm import ipo_items, load_prompts
    from .llm.ipo import auto_judge, optimize
    e, i = cfg.evolve, cfg.ipo
    anns = {a.image: a for a in pool}
    usable = [s for s in items if s.image in anns]
    seeds = random.Random(seed).sample(usable, min(len(usable), i.per_type * len(e.operators)))
    if not seeds:
        raise DataError("no item to evolve is about an image of the pool")
    return optimize(client, pool, out, rounds=i.rounds, target=i.target, per_type=0, qtypes=[], clarify=i.clarify,
                    judge=judge or auto_judge, accept=accept, log=log, seed=seed, items_for=ipo_items(seeds, anns, e.operators),
                    template=e.prompt, rules=load_prompts(e.prompt).rules)


def with_evolved(items: list[Sample], evolved: list[Sample], share: float, seed: int,
                 reviewed: dict[str, Sample | None] | None = None) -> list[Sample]:
    """`items` with a `share` of them replaced by an evolved descendant each (the deepest one, drawn
    at random among equals): as many items as before, part of them harder. Items with no kept
    descendant stay as they are.

    `reviewed`: a person's decisions on children (`review.store.reviewed_children`), child id -> the
    child to use (its edit) or None (rejected, or an edit that fails the filter). A left-out child
    gives way to the deepest other usable descendant of the same item (drawn among equals); with
    none left, the item stays as it is. Which items are replaced does not depend on the decisions."""
    reviewed = reviewed or {}
    by_root: dict[str, list[Sample]] = {}
    for c in evolved:
        by_root.setdefault(c.lineage.root, []).append(c)
    rng = random.Random(seed)
    order = [i for i, s in enumerate(items) if s.id in by_root]
    rng.shuffle(order)
    out = list(items)
    for i in order[:round(share * len(items))]:
        family = by_root[items[i].id]
        deepest = max(c.lineage.round for c in family)
        pick = rng.choice([c for c in family if c.lineage.round == deepest])
        if pick.id in reviewed:
            # Drawn as without decisions (the shared generator advances alike), so a decision on one
            # child never changes which child another item gets.
            pick = reviewed[pick.id] or _another_descendant(family, reviewed, f"{seed}|{items[i].id}")
        if pick is not None:
            out[i] = pick
    return out


def _another_descendant(family: list[Sample], reviewed: dict[str, Sample | None], seed: str) -> Sample | None:
    """The deepest descendant a person did not leave out (its edit where edited), drawn among equals."""
    usable = [reviewed.get(c.id, c) for c in family]
    usable = [c for c in usable if c is not None]
    if not usable:
        return None
    deepest = max(c.lineage.round for c in usable)
    return random.Random(seed).choice([c for c in usable if c.lineage.round == deepest])


# ---- train ----

def training_mix(original: list[Sample], incremental: list[Sample], fraction: float, seed: int) -> list[Sample]:
    """The round's training set: a seeded `fraction` of the original data (all of it at 1.0), then
    the incremental items."""
    n = round(len(original) * fraction)
    replay = random.Random(seed).sample(original, n) if n < len(original) else list(original)
    return replay + list(incremental)


def off_benchmark(items: list[Sample], guard: BenchmarkGuard) -> tuple[list[Sample], list[Sample]]:
    """`items` split into those whose picture is none of the benchmark's (by path or content) and
    those on a benchmark picture. A missing or unreadable picture is left for training to report."""
    on = {s.id for s in items if guard.leaks(s) in ("benchmark item", "benchmark image")}
    return [s for s in items if s.id not in on], [s for s in items if s.id in on]


def refuse_benchmark_images(guard: BenchmarkGuard | None, dialog_images: set[str] = frozenset(),
                            image_root: str | Path | None = None, dialog_image_root: str | Path | None = None):
    """`refuse(image, item)` for `merge`: why an item's image may not be trained on (the benchmark's
    pictures by path or content, the dialog benchmark's by path or content, a missing or unreadable
    file), or None. Paths are compared resolved: the items' under `image_root`, the dialog benchmark's
    under `dialog_image_root` (default: `image_root`); "by content" means a byte-identical copy (sha1)."""
    from types import SimpleNamespace

    from .filter import file_hash
    from .images import resolve
    if dialog_images and image_root is None:
        raise DataError("--image-root is needed with --dialog-benchmark (its pictures are compared as files)")
    droot = dialog_image_root if dialog_image_root is not None else image_root
    paths = {resolve(droot, i, where="dialog benchmark") for i in dialog_images} if dialog_images else set()
    hashes = {h for h in map(file_hash, paths) if h}
    cache: dict[Path, str | None] = {}

    def on_dialog(image: str, item: str) -> bool:
        if not paths:
            return False
        path = resolve(image_root, image, where=f"item {item}")
        if path in paths:
            return True
        if path not in cache:
            cache[path] = file_hash(path) if path.is_file() else None
        return cache[path] is not None and cache[path] in hashes

    def refuse(image: str, item: str) -> str | None:
        if on_dialog(image, item):
            return "dialog benchmark image"
        return guard.leaks(SimpleNamespace(id=item, image=image)) if guard else None
    return refuse


def merge_conversations(data: list[Sample], out: str | Path, cfg: RunConfig, seed: int,
                        pool: list[ImageAnnotation] | None = None, refuse=None):
    """The items merged per image into multi-round conversations (`dialog.merge`, with `cfg.merge`:
    at most `max_turns` turns, items with options as letter / word / mixed, opened by `lead`, and the
    turns `merge.pool` names from the annotations of the items' images), written to `out` (JSON lines). DataError for an
    item on a benchmark image (`refuse`) or an item id given twice."""
    from .dialog.merge import merge_items
    m = cfg.merge
    images = {s.image for s in data}
    anns = [a for a in pool if a.image in images] if pool and m.pool else []
    conversations = merge_items(data, anns, m.pool, max_turns=m.max_turns, form=m.form, seed=seed, refuse=refuse,
                                 lead=m.lead)
    write_jsonl(out, conversations)
    return conversations


@dataclass
class Trained:
    vlm: object  # the trained VLM, in memory
    log: dict  # steps, samples, losses


def train_model(model: str | Path, data: list[Sample] | list, image_root: str | Path, out: str | Path, cfg: TrainConfig,
                progress: Progress | None = None, log: Log | None = None,
                annotations: list[ImageAnnotation] | None = None) -> Trained:
    """Fine-tune the checkpoint at `model` on `data` (items, or `Conversation`s; full or LoRA, merged
    back) and save it to `out` (under torchrun, the first process saves). Trained in float32 (bf16
    mixed precision with `cfg.bf16`). `log` hears a warning when multi-round conversations train a
    model whose template puts the question before the image. DataError when `out` already holds a
    model: a finished training is never overwritten. `annotations`: the images' annotations, for
    `cfg.ground_attention`."""
    from .dialog.conversation import Conversation
    from .models.vlm import VLM
    from .train.sft import train
    if (Path(out) / "config.json").exists():
        raise DataError(f"{out}: already holds a trained model; train into another --out, or remove it")
    vlm = VLM.load(model)
    if log and any(isinstance(c, Conversation) and len(c.turns) > 1 for c in data) and vlm.question_first:
        # bench/dialog.py: on this layout merged conversations cost single-round accuracy (about 4.5
        # points, both seeds); with the image first they did not
        log(f"[yellow]{model}: its template puts the question before the image, which only a conversation's first "
            f"question then precedes; merged conversations cost this layout single-round accuracy in bench/dialog.py "
            f"(one-turn conversations, train.conversation: single, did not)[/yellow]")
    log = train(vlm, data, image_root, out, cfg, progress=progress, annotations=annotations)
    return Trained(vlm, log)


def init_model(original: list[Sample], cfg: RunConfig, out: str | Path | None = None,
               pool: list[ImageAnnotation] | None = None, image_root: str | Path | None = None,
               progress: Progress | None = None):
    """The tiny model of `cfg.model.tiny` with a tokenizer trained on the original data and the
    world's words. With a pool, its vision tower (if the family's pretraining knows it) is pretrained
    on the pool's annotations (`cfg.model.vision_pretrain_steps`), holding the first 100 images (at
    most half the pool) out for a probe, whose scores come back (and go to out/vision_probe.json). Returns (VLM, probe or None)."""
    from .models.tiny import build_tiny
    from .models.vision import pretrain_vision, probe
    from .world.build import corpus
    m = cfg.model
    vlm = build_tiny(corpus(original), m.tiny)
    scores = None
    if pool and m.vision_pretrain_steps and vlm.family.vision_pretraining:
        if image_root is None:
            raise DataError("vision pretraining needs the pool's image root")
        held = probe_images(pool)  # kept out of pretraining
        held_out = pool[:held]
        pre = pretrain_vision(vlm, pool[held:], image_root, m.vision_pretrain_steps, seed=cfg.seed, progress=progress,
                              extra=tuple(m.vision_labels), masks=world.object_mask if m.vision_masks else None)
        scores = probe(vlm, pre, held_out, image_root)
        if out:
            write_json(Path(out) / "vision_probe.json", {"losses": pre.losses[::10], "accuracy": scores})
    return vlm, scores


def probe_images(pool: list[ImageAnnotation]) -> int:
    """How many of the pool's first images the vision probe holds out: 100, at most half the pool.
    Neither vision pretraining nor the alignment stage sees them."""
    return min(100, len(pool) // 2)


def align(vlm, pool: list[ImageAnnotation], cfg: RunConfig, image_root: str | Path, work_dir: str | Path,
          progress: Progress | None = None):
    """LLaVA's alignment stage for the tiny model: `model.align` data of the pool's images (not the
    probe's), trained for `model.align_epochs` with the loss on the description. `work_dir` holds its
    checkpoints while it runs. Returns the training log, or None when the config skips the stage."""
    import shutil

    from .generate.align import alignment_samples
    from .train.sft import train
    m = cfg.model
    if m.align == "none" or m.align_epochs <= 0:
        return None
    items = alignment_samples(pool[probe_images(pool):], m.align, seed=cfg.seed)
    log = train(vlm, items, image_root, work_dir, cfg.training(epochs=m.align_epochs, target="answer"),
                progress=progress, annotations=pool)
    shutil.rmtree(work_dir, ignore_errors=True)  # a stage of a model, not a model of its own
    return log


def base_model(cfg: RunConfig, inputs: Inputs, original: list[Sample], model_dir: str | Path, probe_dir: str | Path,
               progress: Progress | None = None):
    """Round 0 of the embedded default: `init_model` (vision pretraining on the pool), LLaVA's
    alignment stage (`model.align`: the pool's descriptions, `model.align_epochs`), then training on
    the original data for `model.base_epochs`; saved to `model_dir`. Returns (VLM, probe scores,
    alignment log or None)."""
    from .train.sft import train
    pool = read_jsonl(inputs.pool, ImageAnnotation)
    vlm, scores = init_model(original, cfg, probe_dir, pool, inputs.image_root, progress)
    aligned = align(vlm, pool, cfg, inputs.image_root, Path(probe_dir) / "align", progress)
    train(vlm, original, inputs.image_root, model_dir, cfg.training(epochs=cfg.model.base_epochs),
          progress=progress, annotations=pool)
    return vlm, scores, aligned


# ---- evaluate ----

def evaluate_model(model, questions: list[Question], image_root: str | Path, out: str | Path, cfg: RunConfig,
                   benchmark: str = "", progress: Progress | None = None, llm: Callable[[], LLMClient] | None = None,
                   served_name: str | None = None, model_name: str | None = None) -> EvalResult:
    """Evaluate a checkpoint folder (or a `VLM` in memory) into `out`: predictions.jsonl,
    badcases.jsonl, results.json, and circular.json with `evaluate.circular`. A finished evaluation
    is read back, not redone; a killed one resumes; a folder holding another model's or benchmark's
    results (or scored predictions) is refused (DataError). The model is evaluated in
    `model.dtype`. `model` may also be a served model's base URL (`served_name` names the model;
    default: the first listed). `model_name`: what identifies the model in evaluation.json (default:
    its folder, resolved, or its URL)."""
    from .models.vlm import VLM, torch_dtype
    out = Path(out)
    e, dtype = cfg.evaluate, torch_dtype(cfg.model.dtype)
    loaded = []

    def vlm():
        if not loaded:
            if isinstance(model, VLM):  # one just trained, evaluated as it would be once reloaded, so a resumed run agrees
                model.model.to(dtype)
                loaded.append(model)
            elif str(model).startswith(("http://", "https://")):  # a model behind a server; its answers cached
                from .models.served import load_served
                loaded.append(load_served(str(model), served_name, cache=out / "served_cache.sqlite"))
            else:
                loaded.append(VLM.load(model, dtype=dtype))
        return loaded[0]

    judge = None
    if e.judge == "llm" and e.method == "letter":
        from .benchmarks.answers import llm_judge
        if llm is None:
            raise DataError("evaluate.judge 'llm' needs an LLM: set llm.base_urls or llm.local")
        judge = llm_judge(llm())

    name = model_name
    if name is None and not isinstance(model, VLM):
        name = str(model) if str(model).startswith(("http://", "https://")) else str(Path(model).resolve())

    def run(where: Path, blind: bool) -> EvalResult:
        what = {"benchmark": benchmark, "questions": hashlib.sha1("\n".join(q.question_id for q in questions).encode()).hexdigest(),
                "method": e.method, "held_out": e.held_out, "prompt": e.prompt if e.method == "letter" else None, "blind": blind}
        if name is not None:
            what["model"] = name
        meta = where / "evaluation.json"
        if (where / "results.json").exists():
            if diff := differs(meta, what, lenient=True):  # a setting an older version did not record is no difference
                raise DataError(f"{where}: holds the results of another evaluation ({', '.join(diff)} differ): "
                                f"evaluate into another --out, or remove it")
            return load_results(where)
        write_json(meta, what)
        return run_evaluate(vlm(), questions, image_root, where, e.method, e.batch_size, benchmark=benchmark,
                            progress=progress, held_out=e.held_out, blind=blind, prompt=e.prompt,
                            max_new_tokens=e.max_new_tokens, judge=judge)

    res = run(out, blind=False)
    if (e.circular or res.circular is not None) and not (out / "circular.json").exists():
        write_json(out / "circular.json", circular_scores(read_jsonl(out / "predictions.jsonl", Prediction)))
    if e.blind:
        run(out / "blind", blind=True)
    if loaded and hasattr(loaded[0], "client"):
        loaded[0].client.close()
    return res


def score_predictions(questions: list[Question], predictions: str | Path, out: str | Path, cfg: RunConfig,
                      benchmark: str = "", llm: Callable[[], LLMClient] | None = None) -> EvalResult:
    """Score replies a model gave elsewhere (`benchmarks.predictions`: this project's, VLMEvalKit's or
    lmms-eval's files) as an evaluation folder `out`, which `plan` can then plan from. Replies are read
    as VLMEvalKit reads them (and by the LLM judge with `evaluate.judge: llm`)."""
    from .benchmarks.answers import llm_judge
    from .benchmarks.predictions import read_predictions
    from .evaluate import score_replies, split, write_evaluation
    judge = llm_judge(llm()) if cfg.evaluate.judge == "llm" and llm else None
    out = Path(out)
    replies = read_predictions(predictions, questions)
    what = {"benchmark": benchmark, "questions": hashlib.sha1("\n".join(q.question_id for q in questions).encode()).hexdigest(),
            "method": "letter", "held_out": cfg.evaluate.held_out, "prompt": None, "blind": False,
            "model": f"predictions {Path(predictions).name} {hashlib.sha1(Path(predictions).read_bytes()).hexdigest()[:12]}"}
    if (out / "results.json").exists():
        # results with no record of what made them are not taken for these predictions' either
        if diff := differs(out / "evaluation.json", what) if (out / "evaluation.json").exists() else list(what):
            raise DataError(f"{out}: holds the results of another evaluation ({', '.join(diff)} differ): "
                            f"score into another --out, or remove it")
    preds = score_replies(questions, replies, split(questions, cfg.evaluate.held_out), judge)
    res = write_evaluation(preds, out, benchmark, "letter")
    write_json(out / "evaluation.json", what)
    if res.circular is not None:
        write_json(out / "circular.json", circular_scores(preds))
    else:
        (out / "circular.json").unlink(missing_ok=True)
    return res


def evaluate_dialog_model(model: str | Path, dialogs_file: str | Path, image_root: str | Path, out: str | Path,
                          batch_size: int = 16, max_new_tokens: int = 24, grader=None, on_dialogs=None,
                          model_name: str | None = None, vlm=None, dtype: str = "float32") -> dict:
    """A checkpoint on a dialog benchmark (`dialog.benchmark.evaluate_dialogs`) into `out`
    (predictions.jsonl, results.json, evaluation.json). A finished evaluation of the same model,
    dialogs and settings is read back, not redone; a folder holding another's is refused (DataError).
    A killed one resumes: each batch's finished dialogs are appended to predictions.partial.jsonl
    (`records.resume_jsonl`, refused in one line when another model, dialog file or setting made it)
    and not asked again; `on_dialogs(predictions)` is called after each batch is kept. `model_name`:
    how the record names the model (the loop's "round_k/model", so a moved run still reads back; default
    its resolved path); `vlm`: the model already loaded from `model` (else loaded here, in `dtype`).
    Turns the grader gave no usable grade leave the folder unfinished (no results.json, the replies
    kept), so a later run grades them without asking the model again."""
    from .dialog.benchmark import DialogPrediction, evaluate_dialogs, read_dialogs
    from .evaluate import model_id
    from .models.vlm import VLM, torch_dtype
    from .records import append_jsonl, finish_partial, resume_jsonl
    out, dialogs_file = Path(out), Path(dialogs_file)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: a file, not a folder: give --out a folder for the predictions and results")
    dialogs = read_dialogs(dialogs_file)  # a missing or bad file: DataError naming it
    what = {"model": model_name or str(Path(model).resolve()), "dialogs": hashlib.sha1(dialogs_file.read_bytes()).hexdigest(),
            "max_new_tokens": max_new_tokens, "grader": getattr(grader, "version", None)}
    if (out / "results.json").exists():
        if diff := differs(out / "evaluation.json", what) if (out / "evaluation.json").exists() else list(what):
            raise DataError(f"{out}: holds the results of another dialog evaluation ({', '.join(diff)} differ): "
                            f"evaluate into another --out, or remove it")
        return json.loads((out / "results.json").read_text())
    vlm = vlm or VLM.load(model, dtype=torch_dtype(dtype))
    partial = out / "predictions.partial.jsonl"
    # the replies do not depend on the grader (grades come after): a graded re-run keeps them; the
    # weights' hash tells a model retrained in the same folder from the one that replied
    done = resume_jsonl(partial, DialogPrediction, {k: what[k] for k in ("model", "dialogs", "max_new_tokens")} |
                        {"weights": model_id(vlm)}, kind="dialog replies")
    write_json(out / "evaluation.json", what)

    def keep(preds):
        append_jsonl(partial, preds)
        if on_dialogs:
            on_dialogs(preds)
    # predictions.jsonl, then results.json, which marks the evaluation finished; then the partial goes
    figures = evaluate_dialogs(vlm, dialogs, image_root, out, batch_size, max_new_tokens, grader, done=done, on_dialogs=keep)
    if figures.get("ungraded"):  # not finished: a later run keeps the replies and grades what is left
        (out / "results.json").unlink(missing_ok=True)
        return figures
    finish_partial(partial)
    return figures


def dialog_benchmark(cfg: RunConfig, world_dir: str | Path) -> Path:
    """The loop's dialog benchmark (`evaluate.dialog` dialogs): world_dir/dialog.json, its pictures
    under world_dir/images/dialog, built once (from the run's seed and world settings, on scenes no
    pool or benchmark uses) and read back after. DataError when the file there holds another number
    of dialogs than the config asks for."""
    from .dialog.benchmark import build_dialog_benchmark, read_dialogs
    world_dir = Path(world_dir)
    path, n = world_dir / "dialog.json", cfg.evaluate.dialog
    if path.exists():
        if (have := len(read_dialogs(path))) != n:
            raise DataError(f"{path}: holds {have} dialogs, evaluate.dialog asks for {n}: remove it to build them anew")
        return path
    build_dialog_benchmark(world_dir / "images", path, n=n, seed=cfg.seed, size=cfg.world.image_size,
                           cooccurrence=cfg.world.cooccurrence)
    return path


def dialog_summary(out: str | Path) -> dict | None:
    """A dialog evaluation's figures for summary.json (accuracy overall, of the later turns and per
    turn; format compliance overall and per format; whole dialogs right), or None when there is none."""
    path = Path(out) / "results.json"
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    return {"accuracy": r["accuracy"], "later_turns_accuracy": r["later_turns_accuracy"], "compliance": r["compliance"],
            "whole_dialogs": r["whole_dialogs"], "dialogs": r["dialogs"],
            "per_turn": {t: x["accuracy"] for t, x in r["per_turn"].items()},
            "per_format_compliance": {f: x["compliance"] for f, x in r["per_format"].items()}}


def blind_results(out: str | Path) -> EvalResult | None:
    """The blind evaluation beside an evaluation folder, if there is one."""
    path = Path(out) / "blind"
    return load_results(path) if (path / "results.json").exists() else None


def circular_summary(out: str | Path) -> dict | None:
    path = Path(out) / "circular.json"
    return json.loads(path.read_text()) if path.exists() else None
