import shutil
from collections import Counter

import pytest

from dataengine.dialog.conversation import FORMATS, parse_box
from dataengine.dialog.merge import items_of, merge, merge_items, pool_turns, sample_turn, single
from dataengine.errors import DataError
from dataengine.records import LETTERS, ImageAnnotation, Sample, read_jsonl


@pytest.fixture(scope="module")
def data(world):
    return read_jsonl(world.original, Sample), read_jsonl(world.pool, ImageAnnotation)


def test_every_item_is_in_exactly_one_conversation_of_its_own_image(data):
    starter, pool = data
    anns = pool[200:240]
    turns = [(s.image, sample_turn(s)) for s in starter] + pool_turns(anns, seed=3)
    convs = merge(turns, max_turns=4, seed=3)
    assert Counter(items_of(convs)) == Counter(t.item for _, t in turns)  # each once, none lost, none made up
    image_of = {t.item: image for image, t in turns}
    assert all(image_of[t.item] == c.image for c in convs for t in c.turns)
    assert all(1 <= len(c.turns) <= 4 for c in convs)
    # an image's turns fill as few conversations as max_turns allows, of near-equal length
    per_image = Counter(image for image, _ in turns)
    for image, n in per_image.items():
        lengths = [len(c.turns) for c in convs if c.image == image]
        assert len(lengths) == -(-n // 4) and max(lengths) - min(lengths) <= 1
    # merged images have turns from several sources, in shuffled order
    assert any(len({t.source for t in c.turns}) >= 3 for c in convs)
    order = [t.item for _, t in turns]
    assert any([t.item for t in c.turns] != sorted((t.item for t in c.turns), key=order.index) for c in convs)
    assert len({c.id for c in convs}) == len(convs)
    # the same seed, the same conversations
    assert merge(turns, max_turns=4, seed=3) == convs
    assert len(single(turns)) == len(turns)


def test_each_turn_carries_its_format_instruction_and_a_well_formed_answer(data):
    starter, pool = data
    ann = pool[250]
    turns = [(s.image, sample_turn(s)) for s in starter[:200]] + pool_turns([ann], seed=0)
    formats = Counter(t.format for _, t in turns)
    assert set(formats) == set(FORMATS)  # letter and word items, caption sentences, grounding boxes
    for _, t in turns:
        assert t.user.endswith("\n" + FORMATS[t.format])
        if t.format == "letter":
            assert t.assistant in LETTERS
        if t.format == "box":
            x1, y1, x2, y2 = parse_box(t.assistant)
            region = ann.regions[int(t.item.rsplit("-", 1)[1])]
            assert abs(x1 * ann.width - region.bbox[0]) <= 0.01 * ann.width and abs(y2 * ann.height - region.bbox[3]) <= 0.01 * ann.height
    # an item with options is asked either way: the letter form lists its options, the word form answers its short answer
    s = next(s for s in starter if s.options)
    assert sample_turn(s, "letter").assistant == s.choice_answer and "A. " in sample_turn(s, "letter").user
    assert sample_turn(s, "word").assistant == s.short_answer and "A. " not in sample_turn(s, "word").user


def test_a_benchmark_image_is_never_merged(world, data, tmp_path):
    from dataengine import stages
    from dataengine.benchmarks.seed import read_seed
    from dataengine.dialog.benchmark import build_dialog_benchmark, dialog_images
    starter, _ = data
    bench = read_seed(world.benchmark)
    guard = stages.benchmark_guard(bench, world)
    dialogs = build_dialog_benchmark(world.image_root, tmp_path / "dialog.json", n=3, seed=5, size=64)
    refuse = stages.refuse_benchmark_images(guard, dialog_images(dialogs), image_root=world.image_root)
    assert merge_items(starter[:50], refuse=refuse)  # training images pass
    on_bench = starter[0].model_copy(update={"id": "leak", "image": bench[0].image})
    with pytest.raises(DataError, match="item leak: benchmark item"):
        merge_items(starter[:5] + [on_bench], refuse=refuse)
    # a copy of a benchmark picture under another name is caught by its content
    shutil.copy(world.image_root / bench[1].image, world.image_root / "pool" / "copy_of_bench.png")
    copy = starter[0].model_copy(update={"id": "copy", "image": "pool/copy_of_bench.png"})
    with pytest.raises(DataError, match="item copy: benchmark image"):
        merge_items([copy], refuse=refuse)
    (world.image_root / "pool" / "copy_of_bench.png").unlink()
    on_dialog = starter[0].model_copy(update={"id": "d", "image": dialogs[0].image})
    with pytest.raises(DataError, match="item d: dialog benchmark image"):
        merge_items([on_dialog], refuse=refuse)
    # the dialog benchmark's pictures by resolved path and by content, not by the path's string
    shutil.copy(world.image_root / dialogs[1].image, world.image_root / "pool" / "copy_of_dialog.png")
    try:
        for k, image in enumerate([f"./{dialogs[0].image}", f"pool/../{dialogs[0].image}", "pool/copy_of_dialog.png"]):
            other = starter[0].model_copy(update={"id": f"d{k}", "image": image})
            with pytest.raises(DataError, match=f"item d{k}: dialog benchmark image"):
                merge_items([other], refuse=refuse)
    finally:
        (world.image_root / "pool" / "copy_of_dialog.png").unlink()


def test_an_item_given_twice_is_refused(data):
    starter, _ = data
    with pytest.raises(DataError, match=f"item {starter[0].id}: given twice"):
        merge_items([starter[0], starter[1], starter[0]])


def test_the_dialog_benchmark_needs_an_image_root_to_compare_files():
    from dataengine import stages
    with pytest.raises(DataError, match="--image-root is needed with --dialog-benchmark"):
        stages.refuse_benchmark_images(None, {"dialog/dialog_900000.png"})
    assert stages.refuse_benchmark_images(None)("pool/x.png", "i") is None  # nothing to refuse, nothing needed


def test_lead_item_opens_each_conversation_with_an_item_while_the_image_has_one(data):
    starter, pool = data
    by_image = {a.image: a for a in pool}
    images = [s.image for s in starter if s.image in by_image][:30]
    assert images, "the starter's pictures are pool pictures"
    items = [s for s in starter if s.image in set(images)]
    turns = [(s.image, sample_turn(s)) for s in items] + pool_turns([by_image[i] for i in dict.fromkeys(images)], seed=1)
    shuffled = merge(turns, max_turns=3, seed=1)
    led = merge(turns, max_turns=3, seed=1, lead="item")
    assert Counter(items_of(led)) == Counter(items_of(shuffled))  # the same turns, each once
    item_ids = {s.id for s in items}
    for image in dict.fromkeys(images):
        convs = [c for c in led if c.image == image]
        n_items = sum(t.item in item_ids for c in convs for t in c.turns)
        openers = [c.turns[0].item in item_ids for c in convs]
        assert sum(openers) == min(n_items, len(convs))  # an item opens every conversation it can
        assert [len(c.turns) for c in convs] == [len(c.turns) for c in shuffled if c.image == image]
    # shuffled, the pool's turns open some conversations that an item could have opened
    assert sum(c.turns[0].item in item_ids for c in shuffled) < sum(c.turns[0].item in item_ids for c in led)
    with pytest.raises(DataError, match="conversation lead"):
        merge(turns, lead="first")
    # an item is told from the annotation's turns by where it came from, not by its source's name: a
    # starter yes/no item (source "existence", like the pool's POPE turns) opens too
    ann = by_image[images[0]]
    yes_no = items[0].model_copy(update={"id": "exist-1", "source": "existence", "image": ann.image, "options": [],
                                          "choice_answer": "", "short_answer": "yes", "instruction": "Is there a ball?"})
    pool_only = pool_turns([ann], ["caption", "region"], seed=1)
    led = merge([(ann.image, sample_turn(yes_no))] + pool_only, max_turns=len(pool_only) + 1, seed=1, lead="item")
    assert led[0].turns[0].item == "exist-1" and all(t.annotation for t in led[0].turns[1:])


def test_followup_chains_stay_together_in_order_and_their_answers_follow_from_the_annotation(data):
    starter, pool = data
    anns = pool[200:260]
    chains = pool_turns(anns, ["followup"], seed=5)
    assert chains and all(t.source == "followup" and t.annotation for _, t in chains)
    by_id = {a.image: a for a in anns}
    firsts = {t.item: (image, t) for image, t in chains if t.follows is None}
    assert len(firsts) >= 20  # most images single out a shape by a direction
    for image, t in chains:
        if t.follows is None:
            assert t.user.startswith("Which shape is") and any(o.name == t.assistant for o in by_id[image].objects)
            continue
        assert t.follows in firsts and firsts[t.follows][0] == image
        named = firsts[t.follows][1].assistant  # the shape the chain is about: "it"
        ann = by_id[image]
        if t.user.startswith("What colour is it?"):
            assert any(o.name == named and o.attributes[0] in t.assistant for o in ann.objects)
        assert "Is there" not in t.user  # yes/no refers back to nothing: the existence kind's
    turns = [(s.image, sample_turn(s)) for s in starter] + pool_turns(anns, ["caption", "grounding"], seed=5) + chains
    for max_turns in (3, 8):
        convs = merge(turns, max_turns=max_turns, seed=5)
        assert Counter(items_of(convs)) == Counter(t.item for _, t in turns)
        # a conversation longer than max_turns is one chain (a chain has 4 turns) and nothing else
        assert all(len(c.turns) <= max_turns or {t.follows or t.item for t in c.turns} == {c.turns[0].item} for c in convs)
        assert (max_turns == 3) == any(len(c.turns) > max_turns for c in convs)
        where = {t.item: (c.id, k) for c in convs for k, t in enumerate(c.turns)}
        for _, t in chains:
            if t.follows:  # in the same conversation, after the turn it refers back to
                assert where[t.item][0] == where[t.follows][0] and where[t.item][1] > where[t.follows][1]
    # the chains shuffle as blocks: a chain's turns are consecutive
    convs = merge(turns, max_turns=8, seed=5)
    for c in convs:
        ids = [t.item for t in c.turns]
        for first in {t.follows for t in c.turns if t.follows}:
            span = [k for k, t in enumerate(c.turns) if t.item == first or t.follows == first]
            assert span == list(range(span[0], span[0] + len(span))), ids


def test_a_turn_that_follows_nothing_on_its_image_is_refused(data):
    starter, pool = data
    (image, first), (_, second) = [x for x in pool_turns(pool[200:260], ["followup"], seed=5)][:2]
    with pytest.raises(DataError, match=f"item {second.item}: follows item {first.item}, which is not an earlier turn"):
        merge([(image, second), (image, first)])
