import pytest

from dataengine.dialog.conversation import Conversation, Turn
from dataengine.errors import DataError
from dataengine.train.sft import check_trainable


def _conv(cid, turns):
    return Conversation(id=cid, image="pool/x.png", turns=[Turn(user=u, assistant=a, source="t", format="word", item=f"{cid}-{k}")
                                                        for k, (u, a) in enumerate(turns)])


def test_a_conversation_that_cannot_be_trained_on_is_named(tiny_vlm):
    check_trainable(tiny_vlm, [_conv("ok", [("What is it?", "ball")] * 3)], "short_answer")
    with pytest.raises(DataError, match="conversation c2: item c2-1: empty answer"):
        check_trainable(tiny_vlm, [_conv("c1", [("Q?", "a")]), _conv("c2", [("Q?", "a"), ("Q2?", " ")])], "short_answer")
    limit = tiny_vlm.model.config.get_text_config().max_position_embeddings
    long = _conv("long", [("What colour is the small ball at the top left?", "red")] * (limit // 8))
    with pytest.raises(DataError, match=rf"conversation long: \d+ tokens with its image, more than the model's {limit}"):
        check_trainable(tiny_vlm, [long], "short_answer")


def test_train_names_the_file_of_an_item_it_cannot_train_on(world, tiny_vlm, tmp_path):
    from typer.testing import CliRunner

    from dataengine.cli import app
    from dataengine.records import write_jsonl
    image = next((world.image_root / "pool").glob("*.png")).relative_to(world.image_root).as_posix()
    ok = _conv("c1", [("Q?", "a")]).model_copy(update={"image": image})
    bad = _conv("c2", [("Q?", "a"), ("Q2?", " ")]).model_copy(update={"image": image})
    write_jsonl(tmp_path / "a.jsonl", [ok])
    write_jsonl(tmp_path / "b.jsonl", [bad])
    tiny_vlm.save(tmp_path / "m")
    res = CliRunner().invoke(app, ["train", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "a.jsonl"), "--data",
                                   str(tmp_path / "b.jsonl"), "--conversations", "--image-root", str(world.image_root),
                                   "--out", str(tmp_path / "m1"), "--epochs", "1"])
    assert res.exit_code == 2, res.output
    assert "b.jsonl: conversation c2: item c2-1: empty answer" in " ".join(res.output.split()), res.output


@pytest.mark.parametrize("question_first", [True, False])
def test_merged_conversations_on_a_question_first_model_are_warned_about(world, tmp_path, question_first):
    from dataengine.models.tiny import build_tiny
    from dataengine.records import Sample, read_jsonl
    from dataengine.stages import train_model
    from dataengine.train.config import TrainConfig
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    vlm = build_tiny(corpus(read_jsonl(world.original, Sample)), TINY.model_copy(update={"question_first": question_first}))
    vlm.save(tmp_path / "m")
    image = next((world.image_root / "pool").glob("*.png")).relative_to(world.image_root).as_posix()
    conv = _conv("c", [("What is it?", "ball"), ("What colour is it?", "red")]).model_copy(update={"image": image})
    heard: list[str] = []
    train_model(tmp_path / "m", [conv], world.image_root, tmp_path / "m1", TrainConfig(epochs=1), log=heard.append)
    assert any("puts the question before the image" in h for h in heard) == question_first
    one_turn = conv.model_copy(update={"id": "d", "turns": conv.turns[:1]})
    heard.clear()
    train_model(tmp_path / "m", [one_turn], world.image_root, tmp_path / "m2", TrainConfig(epochs=1), log=heard.append)
    assert not heard  # one-turn conversations train either layout as the evaluation asks


def test_train_refuses_a_broken_chain_and_an_item_trained_twice(world, tiny_vlm, tmp_path):
    import json

    from typer.testing import CliRunner

    from dataengine.cli import app
    from dataengine.records import write_jsonl
    image = next((world.image_root / "pool").glob("*.png")).relative_to(world.image_root).as_posix()
    tiny_vlm.save(tmp_path / "m")
    chain = _conv("c1", [("Which shape is above the red box?", "ball"), ("What colour is it?", "blue")]).model_copy(update={"image": image})
    broken = chain.model_dump()
    broken["turns"][1]["follows"] = "c1-9"
    (tmp_path / "broken.jsonl").write_text(json.dumps(broken) + "\n")
    write_jsonl(tmp_path / "a.jsonl", [chain])
    write_jsonl(tmp_path / "b.jsonl", [chain.model_copy(update={"id": "c2"})])

    def train(*files):
        args = ["train", "--model", str(tmp_path / "m"), "--conversations", "--image-root", str(world.image_root),
                "--out", str(tmp_path / "out"), "--epochs", "1"]
        for f in files:
            args += ["--data", str(tmp_path / f)]
        return CliRunner().invoke(app, args)
    res = train("broken.jsonl")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    said = " ".join(res.output.split())
    assert "broken.jsonl" in said and "follows item c1-9, which is not an earlier turn of this conversation" in said, said
    res = train("a.jsonl", "b.jsonl")
    assert res.exit_code == 2, res.output
    assert "b.jsonl: conversation c2: item c1-0: also a turn of conversation c1" in " ".join(res.output.split()), res.output
    write_jsonl(tmp_path / "twice.jsonl", [chain, chain])  # the same conversation, id and all, twice
    res = train("twice.jsonl")
    assert res.exit_code == 2 and "twice.jsonl: conversation c1: given twice" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "out").exists()
    assert train("a.jsonl").exit_code == 0
