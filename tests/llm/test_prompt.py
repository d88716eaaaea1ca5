import json

from dataengine.llm.prompt import (
    PromptStore,
    PromptVersion,
    describe,
    load_template,
    parse,
    prompt_for,
)
from dataengine.records import ImageAnnotation, ObjectAnn, Prediction, TextAnn


def ann():
    return ImageAnnotation(image_id="1", image="a/1.png", width=200, height=100, captions=["A red ball by a sign."],
                           objects=[ObjectAnn(id=0, name="ball", bbox=[20, 10, 60, 50], attributes=["red", "small"]),
                                    ObjectAnn(id=1, name="sign", bbox=[100, 0, 200, 100], attributes=[])],
                           texts=[TextAnn(text="LAKE", bbox=[120, 20, 180, 60])])


def test_annotation_is_described_with_normalised_boxes_and_ocr_only_for_text_questions():
    text = describe(ann(), 3)
    assert "- small red ball: [0.100, 0.100, 0.300, 0.500]" in text
    assert "- sign: [0.500, 0.000, 1.000, 1.000]" in text
    assert "LAKE" not in text and "A red ball by a sign." in text
    assert 'Text in the image:\n- "LAKE"' in describe(ann(), 9)


def test_messages_carry_type_rules_example_and_bad_cases():
    p = prompt_for(None)
    bad = Prediction(question_id="q", qtype=5, image="b.png", question="How many rings are there?",
                     options=["one", "two", "three", "four"], answer="B", prediction="A", correct=False)
    msgs = p.messages(5, ann(), [bad])
    system = msgs[0]["content"]
    assert "Instances Counting: Requires the model to count" in system
    assert "Never mention the descriptions" in system and "$" not in system
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert json.loads(msgs[2]["content"])["short_answer"] == "two"  # the worked example of the type
    assert "How many rings are there? (answer: two)" in msgs[3]["content"]
    assert msgs[3]["content"].endswith("Write one Instances Counting question.")
    with_image = p.messages(5, ann(), [], image_url="data:image/png;base64,xx")[-1]["content"]
    assert with_image[0]["type"] == "image_url"


def test_template_gives_a_worked_example_for_every_type():
    t = load_template()
    for qtype, ex in t.examples.items():
        assert parse(json.dumps(ex)).kind == "item", qtype


def test_parse_is_tolerant_but_strict_about_what_matters():
    item = {"question": "What should you skip?", "answer": "Skip the puddle.", "short_answer": "puddle",
            "options": ["puddle", "stone", "log", "step"], "correct": "A"}
    # a question that merely contains "skip" is an item (the original substring test threw it away)
    assert parse(json.dumps(item)).kind == "item"
    assert parse("Sure! ```json\n" + json.dumps(item) + "\n``` Hope it helps").item.question == item["question"]
    assert parse(json.dumps(item | {"correct": "(b)"})).item.correct == "B"
    assert parse(json.dumps(item | {"correct": "log"})).item.correct == "C"
    assert parse('{"question": "a\nb", "answer": "x", "short_answer": "x", "options": ["x","y","z","w"], "correct": "A"}').kind == "item"
    assert parse('{"skip": "no text in this image"}').kind == "skip"
    assert parse("SKIP: nothing to ask").kind == "skip"
    assert parse(json.dumps(item | {"options": ["a", "b", "c"]})).reason.startswith("options")
    assert parse(json.dumps(item | {"correct": "E"})).kind == "malformed"
    assert parse('{"question": "x", "options": [').kind == "malformed"
    assert parse("I cannot help with that").kind == "malformed"


def test_store_keeps_versions_and_picks_the_best(tmp_path):
    store = PromptStore(tmp_path / "prompts.jsonl")
    v1 = store.initial()
    assert v1.version == 1 and "Use only the information" in v1.rules and store.best() is None
    v1.correctness = 0.4
    store.save(v1)
    store.save(PromptVersion(version=2, parent=1, rules="- r", feedback=["[wrong answer] q -- why"], correctness=0.7))
    store.save(PromptVersion(version=3, parent=2, rules="- s", correctness=0.7))
    assert [v.version for v in store.versions()] == [1, 2, 3]
    assert store.best().version == 2 and store.get(2).feedback == ["[wrong answer] q -- why"]
    assert prompt_for(store.best()).rules == "- r"
