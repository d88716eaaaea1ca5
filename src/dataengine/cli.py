"""The `dataengine` command: a thin layer over the library, one subcommand per stage."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="A closed-loop data engine for multimodal LLMs (after MLLM-DataEngine).")
console = Console()


def _fail(e: Exception) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {e}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


@app.command()
def loop(config: Optional[Path] = typer.Option(None, help="YAML run config; defaults build the embedded world."),
         run_dir: Path = typer.Option(Path("runs/default"), help="Where every round's files go; re-run to resume."),
         rounds: Optional[int] = typer.Option(None, help="Rounds after the base round (config default: 3).")):
    """Run evaluate -> plan -> generate -> filter -> train -> evaluate for several rounds."""
    from .config import load_config
    from .loop import Loop
    try:
        Loop(load_config(config), run_dir, console).run(rounds)
    except DataError as e:
        _fail(e)


@app.command()
def world(out: Path = typer.Argument(..., help="Folder for images/, pool.jsonl, benchmark.json, starter.jsonl."),
          config: Optional[Path] = typer.Option(None)):
    """Render the synthetic world: generation pool, SEED-format benchmark, starter set."""
    from .config import load_config
    from .loop import build_world
    try:
        inputs = build_world(load_config(config), out)
    except DataError as e:
        _fail(e)
    console.print(f"wrote {inputs.benchmark}, {inputs.pool}, {inputs.original} and images under {inputs.image_root}")


@app.command("init-model")
def init_model(out: Path = typer.Argument(...), corpus_from: Path = typer.Option(..., help="JSONL of samples for the tokenizer."),
               pool: Optional[Path] = typer.Option(None, help="Annotations to pretrain the vision tower on."),
               image_root: Optional[Path] = typer.Option(None), vision_steps: int = typer.Option(300),
               family: str = typer.Option("llava", help="llava, llava_next, idefics3, qwen2_vl, qwen2_5_vl or paligemma")):
    """Build a tiny random-initialised model (LLaVA by default) with a tokenizer trained on your data;
    with --pool, pretrain its vision tower on the pool's annotations (LLaVA only)."""
    from .loop import corpus, progress_bar
    from .model import TinyConfig, build_tiny
    from .records import ImageAnnotation, Sample, read_jsonl
    from .vision import pretrain_vision
    try:
        vlm = build_tiny(corpus(read_jsonl(corpus_from, Sample)), TinyConfig(family=family))
        if pool and family != "llava":
            console.print(f"[yellow]--pool ignored: vision pretraining knows LLaVA's CLIP tower, not {family}'s[/yellow]")
        elif pool:
            if image_root is None:
                raise DataError("--image-root is needed with --pool")
            with progress_bar(console) as p:
                pretrain_vision(vlm, read_jsonl(pool, ImageAnnotation), image_root, vision_steps, progress=p)
        vlm.save(out)
    except (DataError, ValueError) as e:
        _fail(e)
    console.print(f"wrote {out}")


@app.command()
def evaluate(model: Path = typer.Option(...), benchmark: Path = typer.Option(..., help="SEED-Bench JSON or MMBench TSV."),
             image_root: Path = typer.Option(..., help="Images (for MMBench: where its embedded images are written)."),
             out: Path = typer.Option(...),
             method: str = typer.Option("likelihood", help="likelihood or letter"),
             batch_size: int = typer.Option(16),
             circular: bool = typer.Option(False, help="CircularEval: ask once per rotation of the options (MMBench's way)."),
             dtype: str = typer.Option("float32", help="float32, bfloat16 or float16 (on a GPU)")):
    """Evaluate a model: predictions.jsonl, badcases.jsonl, results.json (and circular.json) in OUT."""
    from .benchmark import circular as rotate, circular_scores, read_benchmark
    from .evaluate import run_evaluate
    from .loop import progress_bar
    from .model import VLM
    from .records import Prediction, read_jsonl, write_json
    from .report import accuracy_table
    try:
        questions = read_benchmark(benchmark, image_root)
        if circular:
            questions = rotate(questions)
        vlm = VLM.load(model, dtype=_dtype(dtype))
        with progress_bar(console) as p:
            res = run_evaluate(vlm, questions, image_root, out, method, batch_size, benchmark.name, progress=p)
    except DataError as e:
        _fail(e)
    console.print(accuracy_table([res], title=f"{benchmark.name} ({method})"))
    if circular:
        scores = circular_scores(read_jsonl(out / "predictions.jsonl", Prediction))
        write_json(out / "circular.json", scores)
        o = scores["overall"]
        console.print(f"{o['questions']} questions: single pass {o['single']:.1%}, circular {o['circular']:.1%} "
                      f"(per category and l2-category in {out / 'circular.json'})")
    if res.extraction:
        x = res.extraction
        console.print(f"answers read as a letter: {x['letter']}, by option text (fallback): {x['option']}, unreadable: {x['none']}")


@app.command("mme-eval")
def mme_eval(model: Path = typer.Option(...), root: Path = typer.Option(..., help="The MME release folder (one folder per subtask)."),
             out: Optional[Path] = typer.Option(None, help="Write the scores JSON here.")):
    """MME: answer each yes/no question by likelihood; acc, acc+ and score per subtask, perception and cognition."""
    from .benchmark import mme_scores, read_mme
    from .model import VLM
    from .pope import PopeItem, evaluate_pope
    from .records import write_json
    try:
        items = read_mme(root)
        asked = [PopeItem(question_id=i, image=it.image, text=it.question, label=it.label) for i, it in enumerate(items)]
        scores = mme_scores(items, evaluate_pope(VLM.load(model), asked, root))
    except DataError as e:
        _fail(e)
    if out:
        write_json(out, scores)
    for task, v in scores["subtasks"].items():
        console.print(f"{task:>24}  acc {v['acc']:.3f}  acc+ {v['acc_plus']:.3f}  score {v['score']:.1f}")
    console.print(f"perception {scores['perception']:.1f}  cognition {scores['cognition']:.1f}")


@app.command()
def plan(eval_dir: Path = typer.Option(..., "--eval", help="An evaluate output folder."),
         budget: int = typer.Option(900), strategy: str = typer.Option("sqrt-error"),
         examples: int = typer.Option(10, help="Bad cases per type kept as in-context examples."),
         out: Path = typer.Option(...), seed: int = typer.Option(0)):
    """Adaptive Bad-case Sampling: items per type for the next round, and in-context bad cases.
    MMBench categories are handed to the generator types of benchmark.MMBENCH_TYPES."""
    from .benchmark import generator_types
    from .evaluate import load_results
    from .records import Prediction, read_jsonl, write_json
    from .report import counts_table
    from .sample import plan as make_plan, to_generator_types
    try:
        res = load_results(eval_dir)
        names = {t: r.name for t, r in res.per_type.items()}
        p = make_plan(res.accuracies(), read_jsonl(eval_dir / "badcases.jsonl", Prediction), budget, strategy, examples, seed=seed,
                      names=names)
        p = to_generator_types(p, generator_types(names))
    except DataError as e:
        _fail(e)
    write_json(out, p)
    console.print(counts_table([p]))


def _llm_client(stack, config: Optional[Path], urls: list[str], local: bool, cache: Optional[Path], log_dir: Path):
    """The LLM client of a command: settings from the config's `llm` section, then the flags."""
    from .config import load_config
    from .llm import LLMClient
    from .llm_server import LocalLLM, local_config
    cfg = load_config(config).llm
    if urls:
        cfg = cfg.model_copy(update={"base_urls": urls})
    if local or (cfg.local and not urls):
        url = stack.enter_context(LocalLLM(log_dir / "llm_server.log"))
        cfg = local_config(cfg).model_copy(update={"base_urls": [url]})
    client = LLMClient(cfg, cache_path=cache)
    stack.callback(client.close)
    return client


def _dtype(name: str):
    import torch
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise DataError(f"unknown dtype {name!r}; known: float32, bfloat16, float16")
    return table[name]


_LLM_URL = typer.Option([], "--llm-url", help="OpenAI-compatible base URL (repeat to spread the load).")
_LLM_LOCAL = typer.Option(False, "--llm-local", help="Start the packaged Gemma-3-270M on a local llama.cpp server.")


@app.command()
def generate(plan_file: Path = typer.Option(..., "--plan"), pool: Path = typer.Option(..., help="JSONL of image annotations."),
             out: Path = typer.Option(...), seed: int = typer.Option(0), focus: float = typer.Option(0.5),
             generator: str = typer.Option("grounded", help="grounded, or llm"),
             config: Optional[Path] = typer.Option(None, help="YAML config; its llm section sets the LLM."),
             llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL,
             prompts: Optional[Path] = typer.Option(None, help="Prompt store from `dataengine ipo` (its best version is used)."),
             image_root: Optional[Path] = typer.Option(None, help="Images, when the LLM is sent them (llm.send_image)."),
             cache: Optional[Path] = typer.Option(None, help="LLM cache (default: beside OUT). A re-run pays no finished call again."),
             oversample: Optional[int] = typer.Option(None, help="Candidates per wanted item (default: 3 grounded, 1 llm)."),
             max_images: Optional[float] = typer.Option(None, help="Images tried per wanted item (llm default: 3).")):
    """Generate items per the plan, with the grounded generator or an LLM."""
    import contextlib
    from .generate import GroundedGenerator, LLMGenerator, Vocabulary, generate as gen
    from .loop import progress_bar
    from .prompt import PromptStore, prompt_for
    from .records import ImageAnnotation, read_jsonl, write_json, write_jsonl
    from .sample import Plan
    try:
        if not plan_file.exists():
            raise DataError(f"{plan_file}: plan file not found")
        p = Plan.model_validate_json(plan_file.read_text())
        anns = read_jsonl(pool, ImageAnnotation)
        with contextlib.ExitStack() as stack:
            if generator == "llm":
                client = _llm_client(stack, config, llm_url, llm_local, cache or out.with_suffix(".llm_cache.sqlite"), out.parent)
                best = PromptStore(prompts).best() if prompts else None
                g = LLMGenerator(client, prompt_for(best), source="generated", image_root=str(image_root) if image_root else None)
                oversample, max_images = oversample or 1, max_images or 3.0
            elif generator == "grounded":
                g = GroundedGenerator(focus=focus, vocab=Vocabulary.from_pool(anns))
                oversample = oversample or 3
            else:
                raise DataError(f"unknown generator {generator!r}; known: grounded, llm")
            with progress_bar(console) as bar:
                items = gen(p.counts(), anns, g, p.examples(), seed=seed, progress=bar, oversample=oversample, max_images=max_images)
            if generator == "llm":
                write_json(out.with_suffix(".report.json"), {"generator": g.name, "usage": client.usage.as_dict(client.cfg),
                                                             "outcomes": {t: dict(c) for t, c in g.outcomes.items()},
                                                             "problems": g.problems})
                console.print(f"LLM: {client.usage.summary(client.cfg)}")
    except DataError as e:
        _fail(e)
    write_jsonl(out, items)
    console.print(f"wrote {len(items)} items to {out}")


@app.command()
def ipo(pool: Path = typer.Option(..., help="JSONL of image annotations to generate from."),
        out: Path = typer.Option(..., help="Folder for prompts.jsonl (every version) and each version's items and failures."),
        config: Optional[Path] = typer.Option(None, help="YAML config; its llm and ipo sections apply."),
        llm_url: list[str] = _LLM_URL, llm_local: bool = _LLM_LOCAL,
        image_root: Optional[Path] = typer.Option(None), review: str = typer.Option("auto", help="auto (the annotation verifier) or human"),
        rounds: Optional[int] = typer.Option(None), per_type: Optional[int] = typer.Option(None),
        target: Optional[float] = typer.Option(None), types: Optional[str] = typer.Option(None, help="e.g. 3,5,9 (default: all)"),
        seed: int = typer.Option(0)):
    """Interactive Prompt Optimization: generate, review the failures, let the LLM revise the prompt; repeat."""
    import contextlib
    from .config import load_config
    from .ipo import auto_judge, human_judge, optimize
    from .records import ImageAnnotation, read_jsonl
    try:
        i = load_config(config).ipo
        anns = read_jsonl(pool, ImageAnnotation)
        if review not in ("auto", "human"):
            raise DataError(f"unknown review mode {review!r}; known: auto, human")
        qtypes = [int(t) for t in types.split(",")] if types else i.types

        def accept(current: str, proposed: str) -> str | None:
            answer = typer.prompt("accept this rewrite? [a]ccept / [e]dit / [r]eject", default="a")
            if answer.startswith("e"):
                return typer.edit(proposed) or proposed
            return proposed if answer.startswith("a") else None

        with contextlib.ExitStack() as stack:
            client = _llm_client(stack, config, llm_url, llm_local, out / "llm_cache.sqlite", out)
            res = optimize(client, anns, out, rounds=i.rounds if rounds is None else rounds, target=target or i.target,
                           per_type=per_type or i.per_type, qtypes=qtypes, clarify=i.clarify,
                           judge=auto_judge if review == "auto" else human_judge, accept=None if review == "auto" else accept,
                           log=console.print, seed=seed, image_root=str(image_root) if image_root else None)
    except DataError as e:
        _fail(e)
    from rich.table import Table
    t = Table(title="prompt versions")
    for col in ("version", "parent", "correctness", "judged"):
        t.add_column(col, justify="right")
    for v in res.versions:
        t.add_row(f"v{v.version}", f"v{v.parent}" if v.parent else "-", f"{v.correctness:.0%}" if v.correctness is not None else "-", str(v.judged))
    console.print(t)
    console.print(f"stopped: {res.stopped}; best v{res.best.version}; `dataengine generate --prompts {out / 'prompts.jsonl'}` uses it")


@app.command("llm-serve")
def llm_serve(log: Path = typer.Option(Path("llm_server.log"))):
    """Serve the packaged Gemma-3-270M on a local OpenAI-compatible server until Ctrl-C."""
    import time
    from .llm_server import LocalLLM
    try:
        with LocalLLM(log) as url:
            console.print(f"serving at {url} (model gemma-3-270m); Ctrl-C stops it")
            while True:
                time.sleep(3600)
    except DataError as e:
        _fail(e)
    except KeyboardInterrupt:
        pass


@app.command("filter")
def filter_cmd(inp: Path = typer.Argument(..., help="Generated JSONL."), out: Path = typer.Option(...),
               benchmark: Path = typer.Option(..., help="SEED-Bench JSON or MMBench TSV whose images must stay out."),
               image_root: Path = typer.Option(...), pool: Optional[Path] = typer.Option(None, help="Annotations to verify against."),
               benchmark_image_root: Optional[Path] = typer.Option(None, help="The benchmark's images, if not under IMAGE_ROOT "
                                                                   "(for MMBench: where its images are written).")):
    """Drop malformed, wrong, duplicate and benchmark-leaking items; rejected ones go beside OUT."""
    from .benchmark import is_mmbench, read_benchmark
    from .filter import BenchmarkGuard, filter_samples
    from .records import ImageAnnotation, Sample, read_jsonl, write_json, write_jsonl
    try:
        samples = read_jsonl(inp, Sample)
        if not samples:
            raise DataError(f"{inp}: no generated items to filter")
        anns = {a.image: a for a in read_jsonl(pool, ImageAnnotation)} if pool else None
        if is_mmbench(benchmark) and benchmark_image_root is None:
            # Not into IMAGE_ROOT: MMBench's image names (0.jpg, 1.jpg, ...) may be the pool's too.
            raise DataError(f"{benchmark}: an MMBench file needs --benchmark-image-root, a folder for its images")
        bench_images = benchmark_image_root or image_root
        guard = BenchmarkGuard(read_benchmark(benchmark, bench_images), image_root, bench_images)
        kept, dropped, report = filter_samples(samples, guard, anns)
    except DataError as e:
        _fail(e)
    write_jsonl(out, kept)
    write_jsonl(out.with_name(out.stem + ".rejected.jsonl"), [s.model_copy(update={"source": f"{s.source} | {r}"}) for s, r in dropped])
    write_json(out.with_name(out.stem + ".report.json"), report)
    console.print(f"kept {report.kept} of {len(samples)}; dropped {report.dropped or 'none'}")


@app.command()
def train(model: Path = typer.Option(...), data: list[Path] = typer.Option(..., help="Sample JSONL files; repeat to mix."),
          image_root: Path = typer.Option(...), out: Path = typer.Option(...), epochs: float = typer.Option(1.0),
          lr: float = typer.Option(5e-4), batch_size: int = typer.Option(16), lora: bool = typer.Option(False),
          lora_r: int = typer.Option(16), seed: int = typer.Option(0),
          preset: Optional[str] = typer.Option(None, help="The papers' settings: llava-1.5-lora, llava-1.5-full, minigpt4-lora."),
          sampling: str = typer.Option("random", help="random, or sequential (the seeded shuffle as the order)"),
          grad_accum: int = typer.Option(1),
          save_steps: int = typer.Option(0, help="A checkpoint every N steps; a re-run resumes from the last one."),
          bf16: bool = typer.Option(False, help="bf16 mixed precision (GPU)."),
          gradient_checkpointing: bool = typer.Option(False),
          deepspeed: Optional[Path] = typer.Option(None, help="A DeepSpeed JSON config, for models too large for one GPU."),
          fsdp: bool = typer.Option(False, help="Fully Sharded Data Parallel, under torchrun / accelerate launch."),
          fsdp_config: Optional[Path] = typer.Option(None, help="FSDP's JSON config (version, cpu_offload, min_num_params...).")):
    """Fine-tune MODEL on DATA (full, or LoRA merged back) and save it to OUT as safetensors."""
    from .loop import progress_bar
    from .model import VLM
    from .records import Sample, read_jsonl
    from .train import LoraConfig, TrainConfig, train as do_train
    try:
        samples = [s for f in data for s in read_jsonl(f, Sample)]
        vlm = VLM.load(model)
        common = dict(batch_size=batch_size, seed=seed, sampling=sampling, grad_accum=grad_accum, bf16=bf16, fsdp=fsdp,
                      save_steps=save_steps,
                      gradient_checkpointing=gradient_checkpointing, deepspeed=str(deepspeed) if deepspeed else None,
                      fsdp_config=str(fsdp_config) if fsdp_config else None)
        if preset:
            cfg = TrainConfig(preset=preset, **common)
        else:
            cfg = TrainConfig(epochs=epochs, lr=lr, lora=LoraConfig(r=lora_r, alpha=2 * lora_r) if lora else None, **common)
        with progress_bar(console) as p:
            log = do_train(vlm, samples, image_root, out, cfg, progress=p)
    except (DataError, ValueError) as e:
        _fail(e)
    console.print(f"trained {log['steps']} steps on {log['samples']} items; loss {log['losses'][0]:.3f} -> {log['losses'][-1]:.3f}")


@app.command()
def pool(out: Path = typer.Option(..., help="JSONL of ImageAnnotation records, for generate / ipo / pope-build."),
         image_root: Path = typer.Option(...),
         vg: Optional[Path] = typer.Option(None, help="Visual Genome folder (image_data.json, objects.json, ...)."),
         coco_captions: Optional[Path] = typer.Option(None), coco_instances: Optional[Path] = typer.Option(None),
         coco_image_dir: str = typer.Option("", help="COCO images' folder inside the image root, e.g. train2017."),
         lvis: Optional[Path] = typer.Option(None), captions: Optional[Path] = typer.Option(None, help="A folder's JSONL of image + caption(s)."),
         limit: Optional[int] = typer.Option(None, help="Visual Genome: stop after this many images (streamed).")):
    """Turn Visual Genome, COCO (+LVIS) or a captioned folder of images into an annotation pool."""
    from .pools import read_coco, read_folder, read_visual_genome
    from .records import write_jsonl
    try:
        if sum(x is not None for x in (vg, coco_captions, captions)) != 1:
            raise DataError("give one source: --vg, --coco-captions with --coco-instances, or --captions")
        if vg:
            anns = list(read_visual_genome(vg, image_root, limit=limit))
        elif coco_captions:
            if coco_instances is None:
                raise DataError("--coco-instances is needed with --coco-captions")
            anns = read_coco(coco_captions, coco_instances, image_root, coco_image_dir, lvis)
        else:
            anns = read_folder(image_root, captions)
    except DataError as e:
        _fail(e)
    write_jsonl(out, anns)
    console.print(f"wrote {len(anns)} annotated images to {out}")


@app.command()
def export(inp: Path = typer.Argument(...), out: Path = typer.Option(...),
           to: str = typer.Option("llava", help="llava (conversation JSON) or hf (Parquet shards with the images)"),
           form: str = typer.Option("both", help="llava: direct, choice or both"),
           image_root: Optional[Path] = typer.Option(None, help="hf: where the images are read from")):
    """Export samples to the LLaVA conversation JSON, or to a Hugging Face dataset with the images."""
    from .export import export_hf, export_llava
    from .records import Sample, read_jsonl
    try:
        samples = read_jsonl(inp, Sample)
        if to == "llava":
            export_llava(samples, out, form)
        elif to == "hf":
            if image_root is None:
                raise DataError("--image-root is needed for --to hf")
            export_hf(samples, image_root, out)
        else:
            raise DataError(f"unknown export target {to!r}; known: llava, hf")
    except (DataError, ValueError) as e:
        _fail(e)
    console.print(f"wrote {out}")


@app.command("import")
def import_cmd(inp: Path = typer.Argument(..., help="A LLaVA conversation JSON, or a folder written by `export --to hf`."),
               out: Path = typer.Option(..., help="Sample JSONL."),
               image_root: Optional[Path] = typer.Option(None, help="hf: where to write the images back")):
    """Load exported data back into Sample records."""
    from .export import from_llava, import_hf
    from .records import write_jsonl
    try:
        if inp.is_dir():
            if image_root is None:
                raise DataError("--image-root is needed to write a dataset's images back")
            samples = import_hf(inp, image_root)
        else:
            samples = from_llava(inp)
    except DataError as e:
        _fail(e)
    write_jsonl(out, samples)
    console.print(f"wrote {len(samples)} samples to {out}")


@app.command("pope-build")
def pope_build(pool: Path = typer.Option(..., help="JSONL of image annotations."), out: Path = typer.Option(...),
               split: str = typer.Option("adversarial", help="random, popular or adversarial"),
               seed: int = typer.Option(0)):
    """Build a POPE split (3 present and 3 absent objects per image) from an annotated pool."""
    from .pope import build_pope, write_pope
    from .records import ImageAnnotation, read_jsonl
    try:
        items = build_pope(read_jsonl(pool, ImageAnnotation), split, seed=seed)
    except DataError as e:
        _fail(e)
    write_pope(out, items)
    console.print(f"wrote {len(items)} {split} questions to {out}")


@app.command("pope-eval")
def pope_eval(model: Path = typer.Option(...), questions: Path = typer.Option(..., help="POPE JSONL file."),
              image_root: Path = typer.Option(...), out: Optional[Path] = typer.Option(None, help="Write metrics JSON here.")):
    """Answer POPE questions by yes/no likelihood; print accuracy, precision, recall, F1, yes-ratio."""
    from .model import VLM
    from .pope import evaluate_pope, pope_metrics, read_pope
    from .records import write_json
    try:
        items = read_pope(questions)
        answers = evaluate_pope(VLM.load(model), items, image_root)
    except DataError as e:
        _fail(e)
    metrics = pope_metrics([i.label for i in items], answers)
    if out:
        write_json(out, metrics)
    console.print("  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))


@app.command()
def report(run_dir: Path = typer.Argument(Path("runs/default"))):
    """Print the accuracy table of a run, round by round."""
    from .loop import Loop
    from .config import RunConfig
    from .report import accuracy_table, counts_table, run_results
    results = run_results(run_dir)
    if not results:
        _fail(DataError(f"{run_dir}: no evaluated rounds here"))
    console.print(accuracy_table(results))
    console.print(counts_table(Loop(RunConfig(), run_dir).plans(len(results) - 1)))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
