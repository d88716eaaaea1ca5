"""The closed loop: evaluate -> plan (ABS) -> generate -> filter -> train -> evaluate, for N rounds.

This module is bookkeeping: which stage (`stages.py`) runs with which files and seeds. Everything
lands in one run directory; a stage is skipped when its output is already there, so an interrupted
run resumes with `dataengine loop` again and loses no finished stage.

    run/
      config.yaml
      world/            the synthetic world (images/, pool.jsonl, benchmark.json, starter.jsonl; with
                        evaluate.dialog, dialog.json and images/dialog/, built once)
      round_0/model/    the base model;  round_0/eval/  its evaluation;  round_k/dialog/  the dialog benchmark's
      round_k/plan.json generated.jsonl filtered.jsonl rejected.jsonl filter_report.json model/ eval/
                        conversations.jsonl (train.conversation: merged: the training mix merged per image)
      round_n/          with hadpo.after_rounds, a hallucination round after the last: descriptions,
                        judged.jsonl, pairs.jsonl, before/ after/ (POPE, SHR), hadpo.json, model/ eval/
      benchmark_images/ an MMBench TSV's images, written once
      ipo/prompts.jsonl, ipo/v<n>/  prompt versions (LLM generator only), llm_cache.sqlite, llm_server.log
      summary.json
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from rich.console import Console

from . import stages
from .config import RunConfig, dump_config, load_config
from .dialog.benchmark import dialog_images, read_dialogs
from .errors import DataError
from .records import (
    EvalResult,
    ImageAnnotation,
    Inputs,
    Question,
    Sample,
    read_jsonl,
    write_json,
    write_text,
)
from .report.terminal import (
    counts_table,
    hallucination_lines,
    progress_bar,
    run_blind,
    run_plans,
    run_regressions,
    run_report,
)
from .sample import Plan


class Loop:
    """A run of the loop in `run_dir` with config `cfg`; `run()` does (or resumes) it."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, console: Console | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.console = console or Console()
        self._stack = contextlib.ExitStack()
        self._client = None
        self._pool_emb = None

    def _log(self, msg: str) -> None:
        self.console.print(msg)

    def llm(self):
        """The LLM client, started on first use and stopped when the run ends."""
        if self._client is None:
            self._client = self._stack.enter_context(
                stages.open_llm(self.cfg.llm, self.run_dir, self.run_dir / "llm_cache.sqlite", log=self._log))
        return self._client

    def prompt_store(self):
        from .llm.prompt import PromptStore
        g = self.cfg.generate
        return PromptStore(g.prompts) if g.prompts else PromptStore(self.run_dir / "ipo" / "prompts.jsonl")

    def check_config(self, write: bool = False) -> None:
        """Refuse to mix configs in one run directory; the config is written once the inputs have loaded."""
        path = self.run_dir / "config.yaml"
        # Compared as configs, not text: a field added by a newer version (at its default) is no change.
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise DataError(f"{self.run_dir}: a file, not a run directory")
        if path.exists() and not path.read_text().strip():
            path.unlink()  # left empty by a kill before configs were written atomically: as if never written
        if path.exists() and load_config(path) != self.cfg:
            raise DataError(f"{path}: this run directory was made with another config; use a new --run-dir "
                            f"or the same config to resume")
        if write and not path.exists():
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                write_text(path, dump_config(self.cfg))
            except OSError as e:
                raise DataError(f"{self.run_dir}: cannot write the run directory ({e.strerror})") from None

    def _check_type_map(self, benchmark: list[Question]) -> None:
        """A name in generate.type_map that no benchmark item carries is most likely a typo."""
        categories = {q.category for q in benchmark if q.category}
        unknown = sorted(set(self.cfg.generate.type_map) - categories)
        if unknown:
            self._log(f"[yellow]generate.type_map: no benchmark item has the category {', '.join(map(repr, unknown))}[/yellow]")

    def model_dir(self, k: int) -> Path:
        """Round k's model. A checkpoint you bring is round 0's as it is, not copied (7B is 14 GB)."""
        if k == 0 and self.cfg.model.path:
            return Path(self.cfg.model.path)
        return self.run_dir / f"round_{k}" / "model"

    def model_name(self, k: int) -> str:
        """Round k's model as evaluation and the hallucination round record it: named within the run
        directory (a moved run still resumes), or the checkpoint you brought."""
        return str(self.cfg.model.path) if k == 0 and self.cfg.model.path else f"round_{k}/model"

    # ---- the run ----
    def run(self, rounds: int | None = None) -> list[EvalResult]:
        cfg = self.cfg
        rounds = cfg.rounds if rounds is None else rounds
        self.check_config()
        inputs = stages.resolve_inputs(cfg, self.run_dir)
        benchmark, questions = stages.read_questions(inputs, cfg.evaluate.circular)
        self._check_type_map(benchmark)
        original = read_jsonl(inputs.original, Sample)
        if not original and cfg.model.path is None:
            raise DataError(f"{inputs.original}: the original training set is empty")
        guard = stages.benchmark_guard(benchmark, inputs)
        # The filter keeps generated items off the benchmark's pictures; the original data never passes
        # it, and a training set may well hold a benchmark's pictures (the same COCO image, a re-render).
        original, off = stages.off_benchmark(original, guard)
        if off:
            self._log(f"[yellow]{inputs.original}: {len(off)} original items are on benchmark pictures "
                      f"(e.g. {off[0].id}): never trained on[/yellow]")
        self.check_config(write=True)
        results = [self.round_zero(inputs, questions, original)]
        self._log(self.table(results))
        with self._stack:
            if rounds > 0:
                pool = read_jsonl(inputs.pool, ImageAnnotation)
                if cfg.generate.generator == "llm" and not (self.run_dir / f"round_{rounds}" / "generated.jsonl").exists():
                    self.optimize_prompt(pool, inputs)
                for k in range(1, rounds + 1):
                    results.append(self.round(k, inputs, questions, original, pool, guard))
                    self._log(self.table(results))
            if cfg.hadpo.after_rounds:
                results.append(self.hallucination_round(rounds + 1, inputs, questions))
                self._log(self.table(results))
                for line in hallucination_lines(self.run_dir):  # the table holds accuracy only
                    self.console.print(line, highlight=False)
            if self._client:
                self._log(f"LLM this run: {self._client.usage.summary(self._client.cfg)}")
        self._client = None
        if plans := run_plans(self.run_dir)[:rounds]:
            self._log(counts_table(plans))
        write_json(self.run_dir / "summary.json", self.summary(results))
        return results

    def optimize_prompt(self, pool: list[ImageAnnotation], inputs: Inputs) -> None:
        """IPO, automatic, before the first generation (resumes from stored versions)."""
        if self.cfg.generate.prompts:
            return  # the user brought an optimised prompt store
        i = self.cfg.ipo
        self._log(f"interactive prompt optimization (automatic): up to {i.rounds} rewrites, "
                  f"{i.per_type} images a type, target {i.target:.0%}")
        stages.optimize_prompt(self.llm(), pool, self.run_dir / "ipo", i, seed=self.cfg.seed, image_root=inputs.image_root,
                               log=self._log)

    def table(self, results: list[EvalResult]):
        return run_report(self.run_dir, results)

    def summary(self, results: list[EvalResult]) -> dict:
        def figures(r: EvalResult | None) -> dict | None:
            return {"accuracy": r.accuracy, "per_type": {t: x.accuracy for t, x in r.per_type.items()}} if r else None

        guard = run_regressions(self.run_dir, results)
        blind = run_blind(self.run_dir, len(results))
        rounds = []
        for k, r in enumerate(results):
            # "accuracy" and "per_type" over the whole benchmark; "report" (held out) is the headline
            row = {"round": k, **figures(r)}
            if r.parts:
                row |= {"report": figures(r.part("report")), "diagnosis": figures(r.part("diagnosis"))}
            if (b := blind[k]) is not None:
                row["blind"] = {"report": figures(b.part("report")), "all": figures(b)}
            circ = stages.circular_summary(self.run_dir / f"round_{k}" / "eval")
            if self.cfg.evaluate.circular and circ:
                row["circular"] = circ["overall"]["circular"]
            row["regressions"] = guard.get(k, [])
            if self.cfg.evaluate.dialog and (d := stages.dialog_summary(self.run_dir / f"round_{k}" / "dialog")):
                row["dialog"] = d
            if (h := self.run_dir / f"round_{k}" / "hadpo.json").exists():
                row["hallucination"] = hallucination_figures(json.loads(h.read_text()))
            rounds.append(row)
        # The types' names, so a benchmark's categories (MMBench's) read as themselves.
        return {"type_names": {t: x.name for r in results for t, x in r.per_type.items()}, "rounds": rounds}

    def round_zero(self, inputs: Inputs, questions: list[Question], original: list[Sample]) -> EvalResult:
        rd = self.run_dir / "round_0"
        model_dir = self.model_dir(0)
        vlm = None
        if not (model_dir / "config.json").exists():
            if self.cfg.model.path:
                from .models.vlm import check_model_dir
                check_model_dir(model_dir)
            m = self.cfg.model
            self._log(f"round 0: building the tiny model, pretraining its vision tower ({m.vision_pretrain_steps} steps) "
                      f"and training it on {len(original)} starter items")
            with progress_bar(self.console) as p:
                vlm, scores, aligned = stages.base_model(self.cfg, inputs, original, model_dir, rd, progress=p)
            if scores:
                self._log("vision tower probe (held-out patches): " + ", ".join(f"{k} {v:.0%}" for k, v in scores.items()))
            if aligned:
                self._log(f"alignment ({m.align}, {aligned['samples']} items): loss {aligned['losses'][0]:.2f} -> "
                          f"{aligned['losses'][-1]:.2f}")
        return self._evaluate(vlm or model_dir, 0, questions, inputs)

    def _evaluate(self, model, k: int, questions: list[Question], inputs: Inputs) -> EvalResult:
        """Round k's model on the benchmark, into round_k/eval; with `evaluate.dialog`, on the dialog
        benchmark too, into round_k/dialog."""
        with progress_bar(self.console) as p:
            res = stages.evaluate_model(model, questions, inputs.benchmark_image_root, self.run_dir / f"round_{k}" / "eval", self.cfg,
                                        benchmark=inputs.benchmark.name, progress=p, llm=self.llm, model_name=self.model_name(k))
        if self.cfg.evaluate.dialog:
            e = self.cfg.evaluate
            world_dir = self.run_dir / "world"
            f = stages.evaluate_dialog_model(self.model_dir(k), stages.dialog_benchmark(self.cfg, world_dir), world_dir / "images",
                                             self.run_dir / f"round_{k}" / "dialog", e.batch_size, e.max_new_tokens,
                                             model_name=self.model_name(k), vlm=None if isinstance(model, (str, Path)) else model,
                                             dtype=self.cfg.model.dtype)
            self._log(f"round {k}: {f['dialogs']} dialogs: accuracy {f['accuracy']:.1%} (later turns {f['later_turns_accuracy']:.1%}), "
                      f"format compliance {f['compliance']:.1%}")
        return res

    def incremental(self, k: int, all_rounds: bool = True, recheck=None) -> list[Sample]:
        """The kept items of rounds 1..k (or of round k alone), with a person's review decisions
        (`dataengine review`) applied: rejected items left out, edited ones in place of the originals
        when `recheck` (the filter on one item) passes them; where a round evolved its items
        (`evolve.rounds`), its `evolve.share` of them replaced by evolved descendants (of items neither
        rejected nor edited). Decisions on evolved children count too: a rejected child (or one whose
        edit fails the filter) gives way to another descendant of the same item, or to the item
        itself; a passing edit trains in the child's place (`stages.with_evolved`)."""
        from .review.store import reviewed_children, reviewed_round
        out = []
        for j in (range(1, k + 1) if all_rounds else [k]):
            applied = reviewed_round(self.run_dir, j, recheck)
            if applied.rejected or applied.edited or applied.failing:
                self._log(f"round {j}'s items as reviewed: {applied.summary()}")
            items = applied.items
            if items and (self.run_dir / f"round_{j}" / "evolve" / "evolved.jsonl").exists():
                children, decided = reviewed_children(self.run_dir, j, recheck)
                if decided.rejected or decided.edited or decided.failing:
                    self._log(f"round {j}'s evolved items as reviewed: {decided.summary()}")
                edited = set(applied.edited)
                evolved = [c for c in children if c.lineage.root not in edited]
                items = stages.with_evolved(items, evolved, self.cfg.evolve.share, seed=self.cfg.seed + j,
                                            reviewed=decided.decided())
            out += items
        return out

    def round(self, k: int, inputs: Inputs, questions: list[Question], original: list[Sample],
              pool: list[ImageAnnotation], guard) -> EvalResult:
        cfg, rd, prev = self.cfg, self.run_dir / f"round_{k}", self.run_dir / f"round_{k - 1}"
        rd.mkdir(parents=True, exist_ok=True)
        # 1. plan (ABS) from the previous round's evaluation
        if (rd / "plan.json").exists():
            the_plan = stages.read_plan(rd / "plan.json")
        else:
            history = (self.run_dir / f"round_{k - 2}" / "eval", prev / "plan.json") if k >= 2 else (None, None)
            the_plan = stages.plan_round(prev / "eval", rd / "plan.json", cfg, seed=cfg.seed + k, pool=pool,
                                         previous_eval=history[0], previous_plan=history[1])
        self._warn_unplanned(k, the_plan)
        gen_path, filt_path = rd / "generated.jsonl", rd / "filtered.jsonl"
        recheck = stages.edit_check(guard, pool, cfg)  # the filter on an item a person edited
        # The training data so far, read once, and only if generate or filter still has to run.
        seen = original + self.incremental(k - 1, recheck=recheck) if not filt_path.exists() else []
        # 2. generate, never on an image used before for the same type
        if not gen_path.exists():
            generator = stages.make_generator(cfg.generate, pool, f"round-{k}", llm=self.llm,
                                              prompt=self.prompt_store().best(), image_root=inputs.image_root)
            order = self._image_order(k, the_plan, pool)
            with progress_bar(self.console) as p:
                made = stages.generate_items(the_plan, pool, generator, gen_path, cfg.generate, seed=cfg.seed * 100 + k,
                                             seen=seen, order=order, report=rd / "generate_report.json", progress=p)
            if made.usage:
                self._log(f"round {k}: LLM {made.usage.summary(self._client.cfg)}")
        # 3. filter
        if not filt_path.exists():
            generated = read_jsonl(gen_path, Sample)
            if not generated and the_plan.budget > 0:
                if cfg.generate.generator == "grounded":
                    raise DataError(f"{gen_path}: the generator wrote no items for round {k}")
                self._log(f"[yellow]round {k}: the LLM wrote no usable item; see {rd / 'generate_report.json'}[/yellow]")
            f = stages.filter_items(generated, filt_path, guard, pool, cfg, seen=seen,
                                    rejected=rd / "rejected.jsonl", report=rd / "filter_report.json",
                                    blind_model=self.model_dir(k - 1), image_root=inputs.image_root, llm=self.llm)
            self._log(f"round {k}: generated {len(generated)}, kept {len(f.kept)}, dropped {f.report.dropped or 'none'}")
        # 3b. evolve the kept items (MMEvol), when asked
        if cfg.evolve.rounds and not (rd / "evolve" / "evolved.jsonl").exists():
            stages.evolve_items(read_jsonl(filt_path, Sample), pool, rd / "evolve", cfg, seed=cfg.seed * 100 + k, llm=self.llm,
                                log=lambda m: self._log(f"round {k}: {m}"))
        # 4. train from the previous round's model on original + incremental data
        model_dir, vlm = rd / "model", None
        if not (model_dir / "config.json").exists():
            t = cfg.training(seed=cfg.seed + k)
            data = stages.training_mix(original, self.incremental(k, all_rounds=t.incremental == "all", recheck=recheck),
                                       t.original_fraction, seed=cfg.seed + k)
            if t.conversation == "merged":  # per image, one multi-round conversation (arXiv 2401.08968)
                dialogs = self.run_dir / "world" / "dialog.json"
                refuse = stages.refuse_benchmark_images(guard, dialog_images(read_dialogs(dialogs)) if dialogs.exists() else set(),
                                                        image_root=inputs.image_root, dialog_image_root=dialogs.parent / "images")
                # the filter kept generated items off benchmark pictures; the original data never went through it
                off = [(s, why) for s in data if (why := refuse(s.image, s.id))]
                if off:
                    self._log(f"[yellow]round {k}: {len(off)} training items left out of the conversations: "
                              f"{', '.join(sorted({w for _, w in off}))} (e.g. {off[0][0].id})[/yellow]")
                    data = [s for s in data if not refuse(s.image, s.id)]
                data = stages.merge_conversations(data, rd / "conversations.jsonl", cfg, seed=cfg.seed + k, pool=pool, refuse=refuse)
            with progress_bar(self.console) as p:
                vlm = stages.train_model(self.model_dir(k - 1), data, inputs.image_root, model_dir,
                                         t, progress=p,
                                         log=lambda m: self._log(f"round {k}: {m}"),
                                         annotations=pool if t.ground_attention else None).vlm
        # 5. evaluate again
        return self._evaluate(vlm or model_dir, k, questions, inputs)

    def hallucination_round(self, k: int, inputs: Inputs, questions: list[Question]) -> EvalResult:
        """HA-DPO from the last round's model (`hadpo.run_hadpo`), then the benchmark again, so a
        loss elsewhere shows."""
        from .hadpo import run_hadpo
        rd = self.run_dir / f"round_{k}"
        h = self.cfg.hadpo
        self._log(f"round {k}: hallucination round (HA-DPO): {h.images} descriptions, {h.detector} detector, "
                  f"POPE and SHR on {h.eval_images} held-out images")
        with progress_bar(self.console) as p:
            run_hadpo(self.model_dir(k - 1), self.cfg, inputs, rd, llm=self.llm, progress=p,
                      log=lambda m: self._log(f"round {k}: {m}"), model_name=self.model_name(k - 1))
        return self._evaluate(rd / "model", k, questions, inputs)

    def _warn_unplanned(self, k: int, the_plan: Plan) -> None:
        if the_plan.unmapped:
            self._log(f"[yellow]round {k}: no items for {', '.join(the_plan.unmapped)}, which no generator type writes "
                      f"(generate.type_map maps a category to a SEED-Bench type 1-9)[/yellow]")
        for name, why in the_plan.unavailable.items():
            self._log(f"[yellow]round {k}: no items for {name}: {why}; its share went to the other types[/yellow]")

    def _image_order(self, k: int, the_plan: Plan, pool: list[ImageAnnotation]):
        if self.cfg.generate.selection == "random":
            return None
        if self._pool_emb is None:
            from .embed import AnnotationText, get_embedder
            if (text := get_embedder(self.cfg.embed.model)) is not None:
                self._pool_emb = AnnotationText(text).embed_images(pool)
        bad = stages.diagnosis_badcases(self.run_dir / f"round_{k - 1}" / "eval")
        return stages.select_images(the_plan, pool, bad, self.cfg, seed=self.cfg.seed * 100 + k, pool_embeddings=self._pool_emb)


def hallucination_figures(hadpo: dict) -> dict:
    """A hallucination round's figures for summary.json: SHR, the descriptions that loop (when
    recorded) and POPE F1 per split, before and after."""
    def short(m: dict) -> dict:
        return {"shr": m["shr"]["shr"], "pope_f1": {s: x["f1"] for s, x in m["pope"].items()},
                "pope_accuracy": {s: x["accuracy"] for s, x in m["pope"].items()}} | (
                    {"loops": m["shr"]["loops"]} if "loops" in m["shr"] else {})
    return {"before": short(hadpo["before"]), "after": short(hadpo["after"]), "pairs": hadpo["pairs"],
            "off_policy": hadpo.get("off_policy", 0), "trained_pairs": hadpo.get("trained_pairs", hadpo["pairs"])}
