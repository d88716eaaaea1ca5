"""The loop on an MMBench TSV: categories handed to the generators' SEED-Bench types, benchmark images
apart from the pool's, and the leak guard across the two image folders."""
import base64
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dataengine.benchmarks.mmbench import generator_types
from dataengine.benchmarks.seed import read_seed
from dataengine.cli import app
from dataengine.config import DataConfig, dump_config, load_config
from dataengine.errors import DataError
from dataengine.filter import BenchmarkGuard, filter_samples
from dataengine.records import ImageAnnotation, Prediction, Question, Sample, read_jsonl
from dataengine.sample import plan, to_generator_types
from tests.support.configs import small_config
from tests.support.files import write_tsv


def bad_case(i: int, qtype: int) -> Prediction:
    # Questions that read nothing alike, so none is dropped as a near-duplicate of another.
    question = hashlib.sha1(str(i).encode()).hexdigest()
    return Prediction(question_id=str(i), qtype=qtype, image=f"{i}.png", question=question,
                      options=[f"answer {i}", "x", "y", "z"], answer="A", prediction="B", correct=False)


# MMBench categories are numbered in sorted order, so their numbers collide with SEED-Bench's 1-9.
NAMES = {1: "attribute_comparison", 2: "attribute_recognition", 3: "image_emotion", 4: "ocr"}


def test_categories_are_summed_into_generator_types_and_unmapped_ones_get_nothing():
    acc = {1: 0.5, 2: 0.5, 3: 0.2, 4: 0.9}
    bad = [bad_case(10 * t + i, t) for t in NAMES for i in range(2)]
    p = to_generator_types(plan(acc, bad, budget=100, names=NAMES, strategy="sqrt-error"), generator_types(NAMES))
    assert p.unmapped == ["image_emotion"]
    # Without image_emotion (the weakest), the shares are sqrt(.5), sqrt(.5), sqrt(.1), renormalised:
    # 40.86, 40.86, 18.27 of 100 items, rounded by largest remainder.
    total = 2 * math.sqrt(0.5) + math.sqrt(0.1)
    assert [p.types[t].ratio for t in (1, 2, 3, 4)] == pytest.approx([math.sqrt(0.5) / total] * 2 + [0.0, math.sqrt(0.1) / total])
    assert [p.types[t].count for t in (1, 2, 3, 4)] == [41, 41, 0, 18]
    assert [p.types[t].generator_type for t in (1, 2, 3, 4)] == [3, 3, None, 9]
    assert p.counts() == {3: 82, 9: 18}
    examples = p.examples()
    assert set(examples) == {3, 9}
    assert sorted(e.question_id for e in examples[3]) == ["10", "11", "20", "21"]  # both attribute categories
    assert sorted(e.question_id for e in examples[9]) == ["40", "41"]
    assert sorted(e.question_id for e in p.types[3].examples) == ["30", "31"]  # kept in plan.json, given to no generator


def test_seed_types_map_to_themselves_and_the_user_map_wins():
    seed = {3: "Instance Attributes", 5: "Instances Counting"}
    p = plan({3: 0.2, 5: 0.9}, [], budget=50, names=seed)
    mapped = to_generator_types(p, generator_types(seed))
    assert mapped.counts() == p.counts() and mapped.unmapped == []
    assert generator_types({1: "ocr", 2: "image_emotion", 5: "counting"}, {"image_emotion": 1, "counting": 5}) == {1: 9, 2: 1, 5: 5}
    with pytest.raises(DataError, match="category 'ocr' maps to 12; the generators write SEED-Bench types 1-9"):
        generator_types(NAMES, {"ocr": 12})
    with pytest.raises(DataError, match="no benchmark type has a generator type .*image_emotion"):
        to_generator_types(plan({1: 0.5}, [], 10, names={1: "image_emotion"}), generator_types({1: "image_emotion"}))


@pytest.mark.parametrize("value", [0, 10, -3])
def test_a_type_map_value_outside_1_to_9_is_refused_by_the_config_check(tmp_path, value):
    p = tmp_path / "run.yaml"
    p.write_text(f"generate: {{type_map: {{attribute_recognition: 3, ocr: {value}}}}}\n")
    with pytest.raises(DataError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: generate.type_map: category 'ocr' maps to {value}; the generators write SEED-Bench types 1-9"
    p.write_text("generate: {type_map: {ocr: 9, image_emotion: 1}}\n")
    assert load_config(p).generate.type_map == {"ocr": 9, "image_emotion": 1}


def test_the_guard_compares_files_across_two_image_roots(tmp_path):
    bench_root, pool_root = tmp_path / "seed-images", tmp_path / "vg"
    bench_root.mkdir(), pool_root.mkdir()
    Image.new("RGB", (16, 16), "red").save(bench_root / "1.png")
    Image.new("RGB", (16, 16), "blue").save(pool_root / "1.png")  # the same name, another picture
    shutil.copy(bench_root / "1.png", pool_root / "copy.png")  # the benchmark's picture, renamed
    Image.new("RGB", (16, 16), "green").save(pool_root / "2.png")
    q = Question(question_id="q1", question="What color is it?", options=["red", "blue", "green", "black"], answer="A", qtype=3, image="1.png")
    item = lambda image: Sample(id=image, image=image, instruction="What is the shape?", answer="It is a square.",
                                short_answer="square", options=["square", "circle", "star", "ring"], choice_answer="A", qtype=3)
    guard = BenchmarkGuard([q], pool_root, bench_root)
    kept, dropped, _ = filter_samples([item("1.png"), item("copy.png"), item("2.png")], guard)
    assert [s.image for s in kept] == ["1.png", "2.png"] and [(s.image, r) for s, r in dropped] == [("copy.png", "benchmark image")]
    # One root for both, as before: the benchmark's own file is caught by its path.
    same = BenchmarkGuard([q], bench_root)
    assert same.leaks(item("1.png")) == "benchmark item"


# The world's benchmark types as MMBench categories; counting has no MMBench category and is mapped by the config.
CATEGORIES = {1: "image_emotion", 3: "attribute_recognition", 4: "object_localization", 5: "instance_counting",
              6: "spatial_relationship", 9: "ocr"}


def mmbench_from_world(world, path) -> list[Question]:
    """An MMBench dev TSV made from the synthetic world's SEED benchmark: base64 images, a repeated
    image given as the index of the row that carries it, as in the official files."""
    questions = [q for q in read_seed(world.benchmark) if q.qtype in CATEGORIES]
    first_row: dict[str, str] = {}
    rows = []
    for i, q in enumerate(questions):
        image = first_row.get(q.image) or base64.b64encode((world.image_root / q.image).read_bytes()).decode()
        first_row.setdefault(q.image, str(i))
        rows.append({"index": str(i), "question": q.question, "hint": "nan", **dict(zip("ABCD", q.options)),
                     "answer": q.answer, "category": CATEGORIES[q.qtype], "l2-category": "perception", "image": image})
    write_tsv(path, rows)
    return questions


@pytest.mark.slow
def test_the_loop_runs_on_mmbench_with_its_images_apart_from_the_pool_and_resumes(tmp_path, world):
    mmbench_from_world(world, tmp_path / "MMBench_DEV_EN.tsv")
    cfg = small_config(rounds=1)
    cfg.data = DataConfig(benchmark=str(tmp_path / "MMBench_DEV_EN.tsv"), image_root=str(world.image_root),
                          pool=str(world.pool), original=str(world.original))
    cfg.generate.type_map = {"instance_counting": 5}
    cfg.evaluate.circular = True
    (tmp_path / "run.yaml").write_text(dump_config(cfg))
    run = tmp_path / "run"
    cmd = ["loop", "--config", str(tmp_path / "run.yaml"), "--run-dir", str(run)]
    res = CliRunner().invoke(app, cmd)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert said.count("round 1: no items for image_emotion, which no generator type writes") == 1

    names = set(CATEGORIES.values())
    images = run / "benchmark_images"
    for k in (0, 1):
        ev = run / f"round_{k}" / "eval"
        results = json.loads((ev / "results.json").read_text())
        assert {t["name"] for t in results["per_type"].values()} == names
        preds = read_jsonl(ev / "predictions.jsonl", Prediction)
        assert len(preds) == 4 * 24  # every question once per rotation of its 4 options
        # Read from the run's own folder: the world's image root holds no such file.
        assert all((images / p.image).is_file() and not (world.image_root / p.image).exists() for p in preds)
        circ = json.loads((ev / "circular.json").read_text())
        assert set(circ["category"]) == names and circ["overall"]["questions"] == 24

    p = json.loads((run / "round_1" / "plan.json").read_text())
    by_name = {t["name"]: t for t in p["types"].values()}
    assert set(by_name) == names and p["unmapped"] == ["image_emotion"]
    assert by_name["image_emotion"]["count"] == 0 and sum(t["count"] for t in by_name.values()) == cfg.sample.budget
    assert {n: t["generator_type"] for n, t in by_name.items()} == {
        "image_emotion": None, "attribute_recognition": 3, "object_localization": 4, "instance_counting": 5,
        "spatial_relationship": 6, "ocr": 9}
    generated = read_jsonl(run / "round_1" / "generated.jsonl", Sample)
    assert generated and {s.qtype for s in generated} <= {3, 4, 5, 6, 9}
    for name, t in by_name.items():
        if t["generator_type"]:
            assert sum(s.qtype == t["generator_type"] for s in generated) <= t["count"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["type_names"].values()) == names and [r["round"] for r in summary["rounds"]] == [0, 1]
    assert all(0 <= r["circular"] <= r["accuracy"] + 1e-9 for r in summary["rounds"])

    # The same command again: nothing is extracted, generated or trained twice; the same results.
    stamps = {f: f.stat().st_mtime_ns for f in run.rglob("*") if f.is_file() and f.name != "summary.json"}
    again = CliRunner().invoke(app, cmd)
    assert again.exit_code == 0, again.output
    assert json.loads((run / "summary.json").read_text()) == summary
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items())
    assert any(f.parent == images for f in stamps)


def test_a_broken_mmbench_file_stops_the_loop_with_one_line(tmp_path, world):
    mmbench_from_world(world, tmp_path / "good.tsv")
    lines = (tmp_path / "good.tsv").read_text().splitlines()
    (tmp_path / "cut.tsv").write_text("\n".join(lines[:3] + ["\t".join(lines[3].split("\t")[:5])] + lines[4:]) + "\n")
    header = lines[0].split("\t")
    drop = header.index("category")
    (tmp_path / "nocat.tsv").write_text("".join("\t".join(c for j, c in enumerate(l.split("\t")) if j != drop) + "\n" for l in lines))
    for name, want in [("cut.tsv", "cut.tsv: question 2: missing field 'answer'"), ("nocat.tsv", "nocat.tsv: missing column 'category'")]:
        cfg = small_config()
        cfg.data = DataConfig(benchmark=str(tmp_path / name), image_root=str(world.image_root), pool=str(world.pool),
                              original=str(world.original))
        (tmp_path / "run.yaml").write_text(dump_config(cfg))
        res = CliRunner().invoke(app, ["loop", "--config", str(tmp_path / "run.yaml"), "--run-dir", str(tmp_path / f"run-{name}")])
        assert res.exit_code == 2 and want in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_cli_filter_catches_an_mmbench_picture_in_the_pool_under_another_name(tmp_path, world):
    questions = mmbench_from_world(world, tmp_path / "dev.tsv")
    ok = read_jsonl(world.pool, ImageAnnotation)[0]
    item = lambda image, i: Sample(id=f"s{i}", image=image, instruction="What is the shape of the object?", answer="A square.",
                                   short_answer="square", options=["square", "circle", "star", "ring"], choice_answer="A", qtype=3)
    # The world's own benchmark files sit under the pool's image root: the TSV carries the same pictures.
    (tmp_path / "gen.jsonl").write_text(item(ok.image, 0).model_dump_json() + "\n" + item(questions[0].image, 1).model_dump_json() + "\n")
    args = ["filter", str(tmp_path / "gen.jsonl"), "--out", str(tmp_path / "kept.jsonl"), "--benchmark", str(tmp_path / "dev.tsv"),
            "--image-root", str(world.image_root)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "needs --benchmark-image-root" in res.output
    res = CliRunner().invoke(app, args + ["--benchmark-image-root", str(tmp_path / "mmb")])
    assert res.exit_code == 0, res.output
    assert [s.id for s in read_jsonl(tmp_path / "kept.jsonl", Sample)] == ["s0"]
    rejected = read_jsonl(tmp_path / "kept.rejected.jsonl", Sample)
    assert [(s.id, s.source.split(" | ")[1]) for s in rejected] == [("s1", "benchmark image")]


def test_benchmark_images_default_to_the_pool_root_or_the_run_for_mmbench(tmp_path):
    from dataengine.stages import resolve_inputs
    files = dict(image_root="vg", pool="vg.jsonl", original="train.jsonl")
    seed = small_config(data=DataConfig(benchmark="SEED-Bench.json", **files))
    assert resolve_inputs(seed, tmp_path).benchmark_image_root == Path("vg")
    apart = small_config(data=DataConfig(benchmark="SEED-Bench.json", benchmark_image_root="SEED-Bench-image", **files))
    assert resolve_inputs(apart, tmp_path).benchmark_image_root == Path("SEED-Bench-image")
    mmb = small_config(data=DataConfig(benchmark="MMBench_DEV_EN.tsv", **files))
    assert resolve_inputs(mmb, tmp_path).benchmark_image_root == tmp_path / "benchmark_images"


def test_a_just_trained_model_is_evaluated_in_the_dtype_a_reloaded_one_gets(world, tmp_path):
    """model.dtype applies to every evaluation, so a resumed run (which reloads) scores as a fresh one."""
    import torch

    from dataengine.models.tiny import build_tiny
    from dataengine.records import Inputs, Sample, read_jsonl
    from dataengine.stages import evaluate_model
    from dataengine.world.build import corpus
    from tests.support.configs import TINY, small_config
    cfg = small_config()
    cfg.model.dtype = "bfloat16"
    vlm = build_tiny(corpus(read_jsonl(world.original, Sample)), TINY)
    vlm.save(tmp_path / "m")
    inputs = Inputs(world.benchmark, world.image_root, world.pool, world.original, world.image_root)
    questions = read_seed(world.benchmark)[:6]
    fresh = evaluate_model(vlm, questions, inputs.benchmark_image_root, tmp_path / "ev-fresh", cfg)
    assert vlm.model.dtype == torch.bfloat16
    reloaded = evaluate_model(tmp_path / "m", questions, inputs.benchmark_image_root, tmp_path / "ev-reloaded", cfg)
    assert [p.prediction for p in read_jsonl(tmp_path / "ev-fresh" / "predictions.jsonl", Prediction)] == \
           [p.prediction for p in read_jsonl(tmp_path / "ev-reloaded" / "predictions.jsonl", Prediction)]
    assert fresh.accuracy == reloaded.accuracy
