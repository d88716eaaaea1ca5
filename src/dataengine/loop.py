"""The closed loop: evaluate -> plan (ABS) -> generate -> filter -> train -> evaluate, for N rounds.

Everything lands in one run directory; each stage is skipped when its output is already there, so
an interrupted run resumes with `dataengine loop` again and loses no finished stage.

    run/
      config.yaml
      world/            the synthetic world (images/, pool.jsonl, benchmark.json, starter.jsonl)
      round_0/model/    the base model;  round_0/eval/  its evaluation
      round_k/plan.json generated.jsonl filtered.jsonl rejected.jsonl filter_report.json model/ eval/
      benchmark_images/ an MMBench TSV's images, written once
      ipo/prompts.jsonl, ipo/v<n>/  prompt versions (LLM generator only), llm_cache.sqlite, llm_server.log
      summary.json
"""
from __future__ import annotations

import contextlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .benchmark import circular, circular_scores, generator_types, is_mmbench, read_benchmark, write_seed
from .config import RunConfig, dump_config, load_config
from .errors import DataError
from .evaluate import load_results, run_evaluate
from .filter import BenchmarkGuard, filter_samples
from .embed import get_embedder
from .generate import GroundedGenerator, LLMGenerator, Vocabulary, generate
from .llm import Usage
from .model import VLM, build_tiny
from .records import ImageAnnotation, Prediction, Question, Sample, read_jsonl, write_json, write_jsonl
from .report import accuracy_table, counts_table
from .sample import Plan, plan, to_generator_types
from .train import train
from .vision import pretrain_vision, probe
from .world import build_pool


@dataclass
class Inputs:
    benchmark: Path
    image_root: Path  # the pool's and the original data's images
    pool: Path
    original: Path
    benchmark_image_root: Path


def progress_bar(console: Console | None = None) -> Progress:
    return Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def build_world(cfg: RunConfig, out: Path) -> Inputs:
    """Render the synthetic world: a generation pool, a held-out SEED-format benchmark, a starter set."""
    w, out = cfg.world, Path(out)
    inputs = Inputs(out / "benchmark.json", out / "images", out / "pool.jsonl", out / "starter.jsonl", out / "images")
    if all(p.exists() for p in (inputs.benchmark, inputs.pool, inputs.original)):
        return inputs
    size = w.image_size
    # Disjoint seed ranges keep the benchmark's scenes out of the pool by construction.
    pool = build_pool(inputs.image_root, "pool", range(cfg.seed * 10**6, cfg.seed * 10**6 + w.pool_size), size)
    bench = build_pool(inputs.image_root, "bench", range(cfg.seed * 10**6 + 500_000, cfg.seed * 10**6 + 500_000 + w.benchmark_per_type * 4), size)
    items = generate({t: w.benchmark_per_type for t in range(1, 10)}, bench, GroundedGenerator(source="bench"), seed=cfg.seed + 7)
    short = {t: w.benchmark_per_type - sum(s.qtype == t for s in items) for t in range(1, 10)}
    if any(short.values()):
        raise DataError(f"{out}: the benchmark scenes could not supply every type: short by {short}")
    write_seed(inputs.benchmark, [Question(question_id=f"{i:05d}", question=s.instruction, options=s.options,
                                           answer=s.choice_answer, qtype=s.qtype, image=s.image) for i, s in enumerate(items)])
    # The starter set draws from the second half of the pool; later rounds may use all of it.
    starter = generate(dict(w.starter), pool[len(pool) // 2:], GroundedGenerator(source="starter"), seed=cfg.seed + 11)
    write_jsonl(inputs.pool, pool)
    write_jsonl(inputs.original, starter)
    return inputs


def resolve_inputs(cfg: RunConfig, run_dir: Path) -> Inputs:
    d = cfg.data
    if not any([d.benchmark, d.pool, d.original, d.image_root]):
        return build_world(cfg, run_dir / "world")
    if d.benchmark_image_root:
        bench_images = Path(d.benchmark_image_root)
    elif is_mmbench(d.benchmark):
        bench_images = run_dir / "benchmark_images"  # its own folder: MMBench's image names (0.jpg, ...) would clash
    else:
        bench_images = Path(d.image_root)
    return Inputs(Path(d.benchmark), Path(d.image_root), Path(d.pool), Path(d.original), bench_images)


def corpus(samples: list[Sample]) -> list[str]:
    """Text to train the tiny model's tokenizer on: the original data and every word the world uses."""
    from .evaluate import LETTER_INSTRUCTION
    from .world import CATEGORIES, COLORS, CONTACTS, NUMBERS, SETTINGS, WORDS
    from .generate import DIRECTIONS, QUADRANTS

    words = CATEGORIES + list(COLORS) + CONTACTS + NUMBERS + SETTINGS + WORDS + list(DIRECTIONS.values()) + QUADRANTS
    texts = [f"USER: <image>\n{s.instruction} ASSISTANT: {s.short_answer} {s.answer} {' '.join(s.options)}" for s in samples]
    return texts + [" ".join(words)] * 5 + [f"A. B. C. D. {LETTER_INSTRUCTION}"] * 5


class Loop:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, console: Console | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.console = console or Console()
        self._stack = contextlib.ExitStack()
        self._client = None
        self._pool_emb = None

    # ---- the LLM, started on first use and stopped when the run ends ----
    def llm(self):
        if self._client is None:
            from .llm import LLMClient
            from .llm_server import LocalLLM, local_config
            cfg = self.cfg.llm
            if cfg.local:
                url = self._stack.enter_context(LocalLLM(self.run_dir / "llm_server.log"))
                cfg = local_config(cfg).model_copy(update={"base_urls": [url]})
                self._log(f"local LLM ({cfg.model}) serving at {url}")
            self._client = LLMClient(cfg, cache_path=self.run_dir / "llm_cache.sqlite")
            self._stack.callback(self._client.close)
        return self._client

    def prompt_store(self):
        from .prompt import PromptStore
        g = self.cfg.generate
        return PromptStore(g.prompts) if g.prompts else PromptStore(self.run_dir / "ipo" / "prompts.jsonl")

    def optimize_prompt(self, pool: list[ImageAnnotation], inputs: Inputs) -> None:
        """IPO, automatic, before the first generation (resumes from stored versions)."""
        from .ipo import optimize
        if self.cfg.generate.prompts:
            return  # the user brought an optimised prompt store
        i = self.cfg.ipo
        self._log(f"interactive prompt optimization (automatic): up to {i.rounds} rewrites, "
                  f"{i.per_type} images a type, target {i.target:.0%}")
        optimize(self.llm(), pool, self.run_dir / "ipo", rounds=i.rounds, target=i.target, per_type=i.per_type,
                 qtypes=i.types, clarify=i.clarify, log=self._log, seed=self.cfg.seed, image_root=str(inputs.image_root))

    def generator(self, k: int, inputs: Inputs, pool: list[ImageAnnotation]):
        g = self.cfg.generate
        if g.generator == "grounded":
            return GroundedGenerator(focus=g.focus, source=f"round-{k}", vocab=Vocabulary.from_pool(pool))
        from .prompt import prompt_for
        best = self.prompt_store().best()
        return LLMGenerator(self.llm(), prompt_for(best, g.template), source=f"round-{k}", image_root=str(inputs.image_root))

    def image_order(self, k: int, the_plan: Plan, pool: list[ImageAnnotation]) -> dict[int, list[int]] | None:
        """Per type: half the images most like the type's bad cases, half at random (paper v1)."""
        g = self.cfg.generate
        if g.selection == "random":
            return None
        from .embed import AnnotationText, similar_and_random
        text = get_embedder(self.cfg.embed.model)
        if text is None:
            raise DataError("generate.selection 'similar' needs an embedding model: set embed.model: minilm")
        images = AnnotationText(text)
        if self._pool_emb is None:
            self._pool_emb = images.embed_images(pool)
        bad = read_jsonl(self.run_dir / f"round_{k - 1}" / "eval" / "badcases.jsonl", Prediction)
        to_generator = the_plan.generator_types()
        order = {}
        for t, n in the_plan.counts().items():
            queries = images.embed_queries([p for p in bad if to_generator.get(p.qtype) == t])
            n_similar = math.ceil(n * g.oversample * (g.max_images or 1) / 2)
            order[t] = similar_and_random(self._pool_emb, queries, n_similar, seed=self.cfg.seed * 100 + k + t)
        return order

    # ---- helpers ----
    def _check_config(self, write: bool = False) -> None:
        """Refuse to mix configs in one run directory; the config is written once the inputs have loaded."""
        path = self.run_dir / "config.yaml"
        text = dump_config(self.cfg)
        # Compared as configs, not text: a field added by a newer version (at its default) is no change.
        if path.exists() and load_config(path) != self.cfg:
            raise DataError(f"{path}: this run directory was made with another config; use a new --run-dir "
                            f"or the same config to resume")
        if write and not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def _log(self, msg: str) -> None:
        self.console.print(msg)

    def _check_type_map(self, benchmark: list[Question]) -> None:
        """A name in generate.type_map that no benchmark item carries is most likely a typo."""
        categories = {q.category for q in benchmark if q.category}
        unknown = sorted(set(self.cfg.generate.type_map) - categories)
        if unknown:
            self._log(f"[yellow]generate.type_map: no benchmark item has the category {', '.join(map(repr, unknown))}[/yellow]")

    def _evaluate(self, model_dir: Path, eval_dir: Path, questions: list[Question], inputs: Inputs, vlm: VLM | None = None):
        if (eval_dir / "results.json").exists():
            res = load_results(eval_dir)
        else:
            dtype = getattr(torch, self.cfg.model.dtype)
            if vlm is None:
                vlm = VLM.load(model_dir, dtype=dtype)
            else:  # the model just trained, evaluated as it would be once reloaded, so a resumed run agrees
                vlm.model.to(dtype)
            with progress_bar(self.console) as p:
                res = run_evaluate(vlm, questions, inputs.benchmark_image_root, eval_dir, self.cfg.evaluate.method,
                                   self.cfg.evaluate.batch_size, benchmark=inputs.benchmark.name, progress=p)
        if self.cfg.evaluate.circular and not (eval_dir / "circular.json").exists():
            write_json(eval_dir / "circular.json", circular_scores(read_jsonl(eval_dir / "predictions.jsonl", Prediction)))
        return res

    # ---- the run ----
    def run(self, rounds: int | None = None) -> list:
        cfg = self.cfg
        rounds = cfg.rounds if rounds is None else rounds
        self._check_config()
        inputs = resolve_inputs(cfg, self.run_dir)
        benchmark = read_benchmark(inputs.benchmark, inputs.benchmark_image_root)
        self._check_type_map(benchmark)
        # CircularEval asks each question once per rotation of its options; the rotations share the
        # question's type, so ABS plans from their accuracy as from single answers.
        questions = circular(benchmark) if cfg.evaluate.circular else benchmark
        original = read_jsonl(inputs.original, Sample)
        if not original and cfg.model.path is None:
            raise DataError(f"{inputs.original}: the original training set is empty")
        self._check_config(write=True)
        results = [self.round_zero(inputs, questions, original)]
        self._log(accuracy_table(results))
        if rounds > 0:
            pool = read_jsonl(inputs.pool, ImageAnnotation)
            guard = BenchmarkGuard(benchmark, inputs.image_root, inputs.benchmark_image_root)
            with self._stack:
                if cfg.generate.generator == "llm" and not (self.run_dir / f"round_{rounds}" / "generated.jsonl").exists():
                    self.optimize_prompt(pool, inputs)
                for k in range(1, rounds + 1):
                    results.append(self.round(k, inputs, questions, original, pool, guard))
                    self._log(accuracy_table(results))
                if self._client:
                    self._log(f"LLM this run: {self._client.usage.summary(self._client.cfg)}")
            self._client = None
        self._log(counts_table(self.plans(rounds)))
        write_json(self.run_dir / "summary.json", self.summary(results))
        return results

    def summary(self, results: list) -> dict:
        rounds = []
        for k, r in enumerate(results):
            row = {"round": k, "accuracy": r.accuracy, "per_type": {t: x.accuracy for t, x in r.per_type.items()}}
            circ = self.run_dir / f"round_{k}" / "eval" / "circular.json"
            if self.cfg.evaluate.circular and circ.exists():
                row["circular"] = json.loads(circ.read_text())["overall"]["circular"]
            rounds.append(row)
        # The types' names, so a benchmark's categories (MMBench's) read as themselves.
        return {"type_names": {t: x.name for r in results for t, x in r.per_type.items()}, "rounds": rounds}

    def model_dir(self, k: int) -> Path:
        """Round k's model. A checkpoint you bring is round 0's as it is, not copied (7B is 14 GB)."""
        if k == 0 and self.cfg.model.path:
            return Path(self.cfg.model.path)
        return self.run_dir / f"round_{k}" / "model"

    def round_zero(self, inputs: Inputs, questions: list[Question], original: list[Sample]):
        rd = self.run_dir / "round_0"
        model_dir = self.model_dir(0)
        vlm = None
        if not (model_dir / "config.json").exists():
            if self.cfg.model.path:
                raise DataError(f"{model_dir}: no model here (config.json missing)")
            else:
                m = self.cfg.model
                self._log(f"round 0: building the tiny model, pretraining its vision tower ({m.vision_pretrain_steps} steps) "
                          f"and training it on {len(original)} starter items")
                vlm = build_tiny(corpus(original), m.tiny)
                base = self.cfg.train.model_copy(update={"epochs": m.base_epochs})
                with progress_bar(self.console) as p:
                    if m.vision_pretrain_steps and m.tiny.family == "llava":  # the dense-label pretraining knows CLIP towers
                        pool = read_jsonl(inputs.pool, ImageAnnotation)
                        held_out = pool[:100]  # the probe's images are kept out of pretraining
                        pre = pretrain_vision(vlm, pool[100:], inputs.image_root, m.vision_pretrain_steps,
                                              seed=self.cfg.seed, progress=p)
                        scores = probe(vlm, pre, held_out, inputs.image_root)
                        write_json(rd / "vision_probe.json", {"losses": pre.losses[::10], "accuracy": scores})
                        self._log("vision tower probe (held-out patches): "
                                  + ", ".join(f"{k} {v:.0%}" for k, v in scores.items()))
                    train(vlm, original, inputs.image_root, model_dir, base, progress=p)
        return self._evaluate(model_dir, rd / "eval", questions, inputs, vlm)

    def plans(self, rounds: int) -> list[Plan]:
        out = []
        for k in range(1, rounds + 1):
            p = self.run_dir / f"round_{k}" / "plan.json"
            if p.exists():
                out.append(Plan.model_validate_json(p.read_text()))
        return out

    def round(self, k: int, inputs: Inputs, questions, original, pool, guard):
        cfg, rd, prev = self.cfg, self.run_dir / f"round_{k}", self.run_dir / f"round_{k - 1}"
        rd.mkdir(parents=True, exist_ok=True)
        # 1. plan (ABS) from the previous round's evaluation
        plan_path = rd / "plan.json"
        if plan_path.exists():
            the_plan = Plan.model_validate_json(plan_path.read_text())
        else:
            res = load_results(prev / "eval")
            bad = read_jsonl(prev / "eval" / "badcases.jsonl", Prediction)
            s = cfg.sample
            names = {t: r.name for t, r in res.per_type.items()}
            # ABS weighs the benchmark's own types; the generators write SEED-Bench's nine.
            the_plan = to_generator_types(
                plan(res.accuracies(), bad, s.budget, s.strategy, s.examples_per_type, s.dedup_threshold,
                     seed=cfg.seed + k, embedder=get_embedder(cfg.embed.model), names=names),
                generator_types(names, cfg.generate.type_map))
            write_json(plan_path, the_plan)
        if the_plan.unmapped:
            self._log(f"[yellow]round {k}: no items for {', '.join(the_plan.unmapped)}, which no generator type writes "
                      f"(generate.type_map maps a category to a SEED-Bench type 1-9)[/yellow]")
        gen_path, filt_path = rd / "generated.jsonl", rd / "filtered.jsonl"
        # The training data so far, read once, and only if generate or filter still has to run.
        seen = original + self.incremental(k - 1, all_rounds=True) if not filt_path.exists() else []
        # 2. generate, never on an image used before for the same type
        if not gen_path.exists():
            used: dict[int, set[str]] = {}
            for s in seen:
                used.setdefault(s.qtype, set()).add(s.image)
            generator = self.generator(k, inputs, pool)
            order = self.image_order(k, the_plan, pool)
            before = dict(self._client.usage.__dict__) if self._client else {}
            with progress_bar(self.console) as p:
                items = generate(the_plan.counts(), pool, generator, the_plan.examples(), seed=cfg.seed * 100 + k,
                                 exclude_images=used, oversample=cfg.generate.oversample, progress=p, order=order,
                                 max_images=cfg.generate.max_images)
            if isinstance(generator, LLMGenerator):
                usage = Usage(**{f: v - before.get(f, 0) for f, v in self._client.usage.__dict__.items()})
                write_json(rd / "generate_report.json", {
                    "generator": generator.name, "usage": usage.as_dict(self._client.cfg),
                    "outcomes": {t: dict(c) for t, c in sorted(generator.outcomes.items())}, "problems": generator.problems})
                self._log(f"round {k}: LLM {usage.summary(self._client.cfg)}")
            write_jsonl(gen_path, items)
        # 3. filter
        if not filt_path.exists():
            generated = read_jsonl(gen_path, Sample)
            if not generated and the_plan.budget > 0:
                if cfg.generate.generator == "grounded":
                    raise DataError(f"{gen_path}: the generator wrote no items for round {k}")
                self._log(f"[yellow]round {k}: the LLM wrote no usable item; see {rd / 'generate_report.json'}[/yellow]")
            anns = {a.image: a for a in pool}
            f = cfg.filter
            kept, dropped, report = filter_samples(generated, guard, anns, seen=seen, embedder=get_embedder(cfg.embed.model),
                                                   similarity=f.similarity, scope=f.scope,
                                                   drop_unverified=f.unverifiable == "drop")
            write_jsonl(rd / "rejected.jsonl", [s.model_copy(update={"source": f"{s.source} | {r}"}) for s, r in dropped])
            write_json(rd / "filter_report.json", report)
            write_jsonl(filt_path, kept)
            self._log(f"round {k}: generated {len(generated)}, kept {len(kept)}, dropped {report.dropped or 'none'}")
        # 4. train from the previous round's model on original + incremental data
        model_dir = rd / "model"
        vlm = None
        if not (model_dir / "config.json").exists():
            data = self.training_mix(k, original)
            # trained in float32 (bf16 mixed precision with train.bf16), whatever model.dtype evaluates in
            vlm = VLM.load(self.model_dir(k - 1))
            with progress_bar(self.console) as p:
                train(vlm, data, inputs.image_root, model_dir, cfg.train.model_copy(update={"seed": cfg.seed + k}), progress=p)
        # 5. evaluate again
        return self._evaluate(model_dir, rd / "eval", questions, inputs, vlm)

    def incremental(self, k: int, all_rounds: bool) -> list[Sample]:
        rounds = range(1, k + 1) if all_rounds else [k]
        out = []
        for j in rounds:
            p = self.run_dir / f"round_{j}" / "filtered.jsonl"
            if p.exists():
                out += read_jsonl(p, Sample)
        return out

    def training_mix(self, k: int, original: list[Sample]) -> list[Sample]:
        t = self.cfg.train
        n = round(len(original) * t.original_fraction)
        replay = random.Random(self.cfg.seed + k).sample(original, n) if n < len(original) else list(original)
        return replay + self.incremental(k, all_rounds=t.incremental == "all")

