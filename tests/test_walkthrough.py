"""The README's real-data walkthrough, command by command, on files in the official formats.

The synthetic world's scenes are written out as a Visual Genome release (image_data.json and the
four annotation files, images under VG_100K/) and its benchmark as a SEED-Bench JSON with its
images in a folder of their own, so every command reads real-format files and the answers can be
checked against exact annotations. The LLM is a local fake OpenAI-compatible server.
"""
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataengine.cli import app
from dataengine.records import ImageAnnotation, Sample, read_jsonl
from tests.support.fake_llm import FakeLLM


def as_visual_genome(pool: list[ImageAnnotation], image_root: Path, out: Path) -> tuple[Path, Path]:
    vg, images = out / "vg", out / "vg-images"
    (images / "VG_100K").mkdir(parents=True)
    vg.mkdir()
    files = {k: [] for k in ("image_data", "objects", "attributes", "relationships", "region_descriptions")}
    for n, a in enumerate(pool, start=1):
        name = f"{n}.jpg"
        shutil.copy(image_root / a.image, images / "VG_100K" / name)  # a PNG under a .jpg name, as PIL sniffs content
        files["image_data"].append({"image_id": n, "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{name}",
                                    "width": a.width, "height": a.height, "coco_id": None, "flickr_id": None})
        objs = [{"object_id": n * 100 + o.id, "x": o.bbox[0], "y": o.bbox[1], "w": o.bbox[2] - o.bbox[0],
                 "h": o.bbox[3] - o.bbox[1], "names": [o.name], "synsets": []} for o in a.objects]
        files["objects"].append({"image_id": n, "objects": objs})
        files["attributes"].append({"image_id": n, "attributes": [
            {**ob, "attributes": o.attributes} for ob, o in zip(objs, a.objects)]})
        files["relationships"].append({"image_id": n, "relationships": []})
        files["region_descriptions"].append({"id": n, "regions": [
            {"region_id": n * 100 + i, "image_id": n, "phrase": c, "x": 0, "y": 0, "width": a.width, "height": a.height}
            for i, c in enumerate(a.captions)]})
    for k, v in files.items():
        (vg / f"{k}.json").write_text(json.dumps(v))
    return vg, images


def as_seed_bench(benchmark: Path, image_root: Path, out: Path) -> tuple[Path, Path]:
    data = json.loads(benchmark.read_text())
    images = out / "SEED-Bench-image"
    images.mkdir()
    for q in data["questions"]:
        name = Path(q["data_id"]).name
        shutil.copy(image_root / q["data_id"], images / name)
        q["data_id"] = name
    (out / "SEED-Bench.json").write_text(json.dumps(data))
    return out / "SEED-Bench.json", images


def writer(body: dict) -> str:
    """An LLM that asks which object is in the image, its answer taken from the annotation it is sent."""
    text = body["messages"][-1]["content"]
    text = text if isinstance(text, str) else " ".join(c.get("text", "") for c in text)
    names = re.findall(r"^- (?:[a-z]+ )*([a-z]+): \[", text, re.M)  # "- large yellow star: [...]"
    name = names[-1] if names else "ball"
    wrong = [w for w in ("zebra", "kite", "boat", "tower") if w != name][:3]
    return json.dumps({"question": "Which of these objects can be seen in the image?", "answer": f"A {name} can be seen.",
                       "short_answer": name, "options": [name, *wrong], "correct": "A"})


def ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_the_readme_walkthrough_on_official_formats(world, tmp_path):
    r = CliRunner()
    pool = read_jsonl(world.pool, ImageAnnotation)[:60]
    vg, vg_images = as_visual_genome(pool, world.image_root, tmp_path)
    seed, seed_images = as_seed_bench(world.benchmark, world.image_root, tmp_path)

    # 1. the annotation pool, from Visual Genome's files
    ok(r.invoke(app, ["pool", "--vg", str(vg), "--image-root", str(vg_images), "--out", str(tmp_path / "vg.jsonl")]))
    anns = read_jsonl(tmp_path / "vg.jsonl", ImageAnnotation)
    assert len(anns) == 60 and anns[0].image == "VG_100K/1.jpg"
    assert [o.name for o in anns[0].objects] == [o.name for o in pool[0].objects]
    # 2. a model (here a tiny Qwen2-VL) and the original training data on the pool's images
    original = tmp_path / "original.jsonl"
    from dataengine.generate import GroundedGenerator, generate
    from dataengine.qtypes import Vocabulary
    from dataengine.records import write_jsonl
    write_jsonl(original, generate({t: 3 for t in range(1, 10)}, anns, GroundedGenerator(Vocabulary.from_pool(anns)), seed=3))
    ok(r.invoke(app, ["init-model", str(tmp_path / "m0"), "--corpus-from", str(original), "--family", "qwen2_vl"]))
    # 3. evaluate on SEED-Bench, its images in their own folder
    ok(r.invoke(app, ["evaluate", "--model", str(tmp_path / "m0"), "--benchmark", str(seed),
                      "--image-root", str(seed_images), "--out", str(tmp_path / "ev")]))
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["total"] == 36
    # 4. ABS, 5. generation with an LLM (sent the pool's annotations), 6. the filter
    ok(r.invoke(app, ["plan", "--eval", str(tmp_path / "ev"), "--budget", "12", "--out", str(tmp_path / "plan.json")]))
    with FakeLLM(answer=writer) as srv:
        ok(r.invoke(app, ["generate", "--plan", str(tmp_path / "plan.json"), "--pool", str(tmp_path / "vg.jsonl"),
                          "--out", str(tmp_path / "gen.jsonl"), "--generator", "llm", "--llm-url", srv.url]))
    generated = read_jsonl(tmp_path / "gen.jsonl", Sample)
    assert generated and all(s.image.startswith("VG_100K/") for s in generated)
    ok(r.invoke(app, ["filter", str(tmp_path / "gen.jsonl"), "--out", str(tmp_path / "kept.jsonl"), "--benchmark", str(seed),
                      "--benchmark-image-root", str(seed_images), "--image-root", str(vg_images), "--pool", str(tmp_path / "vg.jsonl")]))
    kept = read_jsonl(tmp_path / "kept.jsonl", Sample)
    by_image = {a.image: {o.name for o in a.objects} for a in anns}
    assert kept and all(s.short_answer in by_image[s.image] for s in kept)  # the fake LLM named an annotated object
    # 7. LoRA with LLaVA-1.5's settings on original + kept, 8. export both ways
    ok(r.invoke(app, ["train", "--model", str(tmp_path / "m0"), "--data", str(original), "--data", str(tmp_path / "kept.jsonl"),
                      "--image-root", str(vg_images), "--out", str(tmp_path / "m1"), "--preset", "llava-1.5-lora",
                      "--batch-size", "8"]))
    assert (tmp_path / "m1" / "model.safetensors").exists()
    ok(r.invoke(app, ["evaluate", "--model", str(tmp_path / "m1"), "--benchmark", str(seed),
                      "--image-root", str(seed_images), "--out", str(tmp_path / "ev1")]))
    ok(r.invoke(app, ["export", str(tmp_path / "kept.jsonl"), "--to", "hf", "--image-root", str(vg_images), "--out", str(tmp_path / "hf")]))
    ok(r.invoke(app, ["export", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / "kept-llava.json")]))
    llava = json.loads((tmp_path / "kept-llava.json").read_text())
    # each item twice: the direct answer and the multiple-choice form
    assert len(llava) == 2 * len(kept) and all(c["conversations"][0]["value"].startswith("<image>") for c in llava)
    assert sum("Answer with the option's letter" in c["conversations"][0]["value"] for c in llava) == len(kept)

    # 9. the same, as one loop over the real files: the model you bring is used where it is
    import yaml
    with FakeLLM(answer=writer) as srv:
        config = {"rounds": 1, "seed": 1,
                  "data": {"benchmark": str(seed), "benchmark_image_root": str(seed_images), "image_root": str(vg_images),
                           "pool": str(tmp_path / "vg.jsonl"), "original": str(original)},
                  "model": {"path": str(tmp_path / "m0")},
                  "sample": {"budget": 12},
                  "generate": {"generator": "llm", "oversample": 1},
                  "llm": {"base_urls": [srv.url], "model": "my-model"},
                  "ipo": {"rounds": 0, "per_type": 1},
                  "train": {"preset": "llava-1.5-lora", "batch_size": 8}}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
        cmd = ["loop", "--config", str(tmp_path / "run.yaml"), "--run-dir", str(tmp_path / "run")]
        ok(r.invoke(app, cmd))
        requests = len(srv.bodies)
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert [x["round"] for x in summary["rounds"]] == [0, 1]
        assert not (tmp_path / "run" / "round_0" / "model").exists()  # not copied
        assert (tmp_path / "run" / "round_1" / "model" / "model.safetensors").exists()
        items = read_jsonl(tmp_path / "run" / "round_1" / "generated.jsonl", Sample)
        assert items and all(s.image.startswith("VG_100K/") and s.generator.startswith("llm:my-model:") for s in items)
        ok(r.invoke(app, cmd))  # resumes: nothing left to do, no LLM call
        assert len(srv.bodies) == requests
        assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
