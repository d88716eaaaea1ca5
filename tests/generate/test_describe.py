"""Describe: one description per image, by the model's own generation; a killed run resumes."""
import pytest

from dataengine.errors import DataError
from dataengine.generate.describe import Description, describe
from dataengine.records import ImageAnnotation, read_jsonl


class Counting:
    """A model's `generate`, counting the images it is asked about."""

    def __init__(self, vlm):
        self.vlm, self.model, self.asked = vlm, vlm.model, 0

    def generate(self, items, max_new_tokens=8):
        items = list(items)
        self.asked += len(items)
        return self.vlm.generate(items, max_new_tokens=max_new_tokens)


def test_descriptions_resume_after_a_kill_without_describing_an_image_twice(tiny_vlm, world, tmp_path):
    pool = read_jsonl(world.pool, ImageAnnotation)[:10]
    whole = describe(tiny_vlm, pool, world.image_root, tmp_path / "whole.jsonl", batch_size=4, max_new_tokens=6)
    assert [d.image for d in whole] == [a.image for a in pool] and all(d.prompt == "Describe this image in detail." for d in whole)

    class Killed(Exception):
        pass

    def kill(n):
        raise Killed
    model = Counting(tiny_vlm)
    with pytest.raises(Killed):
        describe(model, pool, world.image_root, tmp_path / "d.jsonl", batch_size=4, max_new_tokens=6, on_batch=kill)
    assert not (tmp_path / "d.jsonl").exists() and model.asked == 4
    with (tmp_path / "d.partial.jsonl").open("a") as f:
        f.write('{"id": "desc-cut", "ima')  # the kill cut a line short
    again = describe(model, pool, world.image_root, tmp_path / "d.jsonl", batch_size=4, max_new_tokens=6)
    assert model.asked == 10 and again == read_jsonl(tmp_path / "d.jsonl", Description)
    assert [d.text for d in again] == [d.text for d in whole]  # greedy: as if never stopped
    assert not (tmp_path / "d.partial.jsonl").exists()


def test_another_models_partial_descriptions_are_refused(tiny_vlm, world, tmp_path):
    pool = read_jsonl(world.pool, ImageAnnotation)[:4]
    with pytest.raises(RuntimeError):
        describe(tiny_vlm, pool, world.image_root, tmp_path / "d.jsonl", batch_size=2, max_new_tokens=4,
                 on_batch=lambda n: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(DataError, match="d.partial.jsonl: partial descriptions of another run \\(prompt differ\\)"):
        describe(tiny_vlm, pool, world.image_root, tmp_path / "d.jsonl", prompt="Describe it.", max_new_tokens=4)
    with pytest.raises(DataError, match="no images to describe"):
        describe(tiny_vlm, [], world.image_root, tmp_path / "e.jsonl")
