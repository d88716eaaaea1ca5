"""Multi-turn encoding: the loss covers every assistant turn and no user turn, for every family."""
import pytest
import torch
from PIL import Image

FAMILIES = ["llava", "llava_next", "idefics3", "qwen2_vl", "qwen2_5_vl", "paligemma"]

TURNS = [("How many stars are there in the image?", "two"),
         ("What color is the ball?", "red"),
         ("Where is the small blue box?", "[0.10, 0.20, 0.35, 0.50]"),
         ("Is there a ring in the image?", "no")]


def _runs(labels: list[int]) -> list[list[int]]:
    """The labelled tokens as runs of consecutive positions."""
    runs, current = [], []
    for t in labels + [-100]:
        if t == -100:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(t)
    return runs


@pytest.fixture(scope="module")
def family_models(world):
    from dataengine.models.tiny import build_tiny
    from dataengine.records import Sample, read_jsonl
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    data = read_jsonl(world.original, Sample)
    return {f: build_tiny(corpus(data), TINY.model_copy(update={"family": f})) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_assistant_token_and_no_user_token_is_labelled(family, family_models):
    vlm = family_models[family]
    img = Image.new("RGB", (64, 64), (10, 120, 200))
    convs = [TURNS, TURNS[:2], [TURNS[3]]]
    batch = vlm.encode_conversation_batch([img] * 3, convs)
    for row, turns in enumerate(convs):
        labels = batch["labels"][row].tolist()
        ids = batch["input_ids"][row].tolist()
        runs = _runs(labels)
        # one run per assistant turn, each exactly the model saying that answer in its own format
        assert runs == [vlm.encode_answer(a) for _, a in turns], vlm.tokenizer.batch_decode(runs)
        # labels copy the input ids where set
        assert all(l in (-100, i) for l, i in zip(labels, ids))
        # every user turn's words are in the input and none of their positions is labelled
        for user, _ in turns:
            words = vlm.tokenizer(user, add_special_tokens=False)["input_ids"][:3]
            at = next(k for k in range(len(ids)) if ids[k:k + len(words)] == words)
            assert all(labels[k] == -100 for k in range(at, at + len(words)))
        # the image appears once: its tokens come before the first answer only
        image_id = vlm.processor.tokenizer.convert_tokens_to_ids(getattr(vlm.processor, "image_token", "<image>"))
        first_label = next(k for k, l in enumerate(labels) if l != -100)
        assert image_id in ids[:first_label] and image_id not in ids[first_label:]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "paligemma"])
def test_a_conversation_trains_and_generates(family, family_models):
    vlm = family_models[family]
    img = Image.new("RGB", (64, 64), (10, 120, 200))
    batch = vlm.encode_conversation_batch([img, img], [TURNS, TURNS[1:3]])
    loss = vlm.model(**vlm.on_device(batch)).loss
    assert torch.isfinite(loss)
    replies = vlm.generate_chat([(img, TURNS[:1] + [(TURNS[1][0], None)]), (img, [(TURNS[2][0], None)])], max_new_tokens=3)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
