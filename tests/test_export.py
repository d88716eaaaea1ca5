import json

import pytest
from typer.testing import CliRunner

from dataengine.cli import app
from dataengine.errors import DataError
from dataengine.export import export_hf, export_llava, from_llava, import_hf, to_llava
from dataengine.generate import GroundedGenerator, generate
from dataengine.records import ImageAnnotation, Sample, read_jsonl
from dataengine.world.render import VOCABULARY


@pytest.fixture
def samples(world):
    return generate({3: 3, 9: 2}, read_jsonl(world.pool, ImageAnnotation), GroundedGenerator(VOCABULARY))


def test_llava_json_has_both_forms_and_loads_back(samples, tmp_path):
    entries = to_llava(samples)
    choice = next(e for e in entries if e["id"].endswith("-choice"))
    human = choice["conversations"][0]["value"]
    assert human.startswith("<image>\n") and "\nA. " in human
    assert human.endswith("Answer with the option's letter from the given choices directly.")
    assert choice["conversations"][1]["value"] in "ABCD"
    export_llava(samples, tmp_path / "llava.json")
    assert from_llava(tmp_path / "llava.json") == samples
    # the choice form alone still loads; the sentence answer is then the short answer
    export_llava(samples, tmp_path / "choice.json", form="choice")
    back = from_llava(tmp_path / "choice.json")
    assert [(s.instruction, s.options, s.choice_answer) for s in back] == [(s.instruction, s.options, s.choice_answer) for s in samples]
    (tmp_path / "bad.json").write_text(json.dumps([{"id": "x", "conversations": []}]))
    with pytest.raises(DataError, match="bad.json: entry 0: not an exported conversation"):
        from_llava(tmp_path / "bad.json")


def test_hf_parquet_shards_carry_the_images_and_load_back(samples, world, tmp_path):
    export_hf(samples, world.image_root, tmp_path / "ds", shard_size=2)
    assert len(list((tmp_path / "ds").glob("*.parquet"))) == 3
    import datasets
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "ds"), split="train")
    assert ds.num_rows == 5 and ds[0]["image"].size == (64, 64)  # a PIL image, decoded by datasets
    back = import_hf(tmp_path / "ds", tmp_path / "images")
    assert back == samples
    for s in back:
        assert (tmp_path / "images" / s.image).read_bytes() == (world.image_root / s.image).read_bytes()


def test_a_broken_parquet_shard_of_samples_is_named_in_one_line(samples, world, tmp_path):
    import pytest

    from dataengine.errors import DataError
    export_hf(samples, world.image_root, tmp_path / "ds", shard_size=2)
    shard = sorted((tmp_path / "ds").glob("*.parquet"))[1]
    shard.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"{shard.name}: not a readable Parquet shard"):
        import_hf(tmp_path / "ds", tmp_path / "images")


def test_cli_export_and_import_round_trip(samples, world, tmp_path):
    from dataengine.records import write_jsonl
    write_jsonl(tmp_path / "s.jsonl", samples)
    r = CliRunner().invoke(app, ["export", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "ds"), "--to", "hf",
                                 "--image-root", str(world.image_root)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["import", str(tmp_path / "ds"), "--out", str(tmp_path / "back.jsonl"), "--image-root", str(tmp_path / "img")])
    assert r.exit_code == 0, r.output
    assert read_jsonl(tmp_path / "back.jsonl", Sample) == samples


def test_items_without_a_picture_or_with_a_path_out_of_the_root_are_not_exported(samples, tmp_path):
    from dataengine.filter import filter_samples
    item = samples[0]
    for bad, needle in ((item.model_copy(update={"image": ""}), "no image"),
                        (item.model_copy(update={"image": "../x.png"}), "leaves the image root"),
                        (item.model_copy(update={"image": "/etc/x.png"}), "leaves the image root"),
                        (item.model_copy(update={"answer": ""}), "empty field")):
        with pytest.raises(DataError, match=f"sample {item.id}: .*{needle}"):
            export_llava([bad], tmp_path / "x.json")
    kept, dropped, _ = filter_samples([item.model_copy(update={"image": ""})])
    assert not kept and dropped[0][1] == "no image"
