"""Every name a user chooses is looked up in a registry that suggests the closest known name."""
import pytest

from dataengine.errors import DataError
from dataengine.registry import Registry


def test_register_get_and_suggest():
    r = Registry("colour")
    r.register("red", 1)

    @r.register("blue")
    def blue():
        return 2

    assert r.get("red") == 1 and r.get("blue") is blue and r.names() == ["red", "blue"] and "red" in r
    with pytest.raises(DataError, match=r"unknown colour 'bleu' \(did you mean 'blue'\?\); known: red, blue"):
        r.get("bleu")
    with pytest.raises(DataError, match=r"unknown colour 'zzz'; known: red, blue$"):
        r.get("zzz")
    with pytest.raises(ValueError, match="did you mean 'red'"):
        r.check("rad")
    with pytest.raises(ValueError, match="registered twice"):
        r.register("red", 3)


def registries():
    from dataengine.benchmarks.pope import SPLITS
    from dataengine.embed import EMBEDDERS
    from dataengine.evaluate import METHODS
    from dataengine.export import FORMS, TARGETS
    from dataengine.generate import GENERATORS
    from dataengine.llm.ipo import REVIEWERS
    from dataengine.models.families import FAMILIES
    from dataengine.models.tiny import TINY_BUILDERS
    from dataengine.qtypes import QUESTION_TYPES
    from dataengine.sample import STRATEGIES
    from dataengine.train.config import PRESETS
    return {"sampling strategy": (STRATEGIES, "sqrt-eror", "sqrt-error"), "generator": (GENERATORS, "grounde", "grounded"),
            "embedding model": (EMBEDDERS, "minilm6", "minilm"), "evaluation method": (METHODS, "leter", "letter"),
            "POPE split": (SPLITS, "adversial", "adversarial"), "model family": (FAMILIES, "qwen2-vl", "qwen2_vl"),
            "tiny model family": (TINY_BUILDERS, "lava", "llava"), "preset": (PRESETS, "llava-1.5-lor", "llava-1.5-lora"),
            "export target": (TARGETS, "lava", "llava"), "LLaVA export form": (FORMS, "choise", "choice"),
            "review mode": (REVIEWERS, "humans", "human"), "question type": (QUESTION_TYPES, 10, None)}


@pytest.mark.parametrize("kind", list(registries()))
def test_every_choice_suggests_the_closest_name(kind):
    reg, typo, meant = registries()[kind]
    assert reg.kind == kind
    hint = rf" \(did you mean '{meant}'\?\)" if meant else ""
    with pytest.raises(DataError, match=rf"unknown {kind} '?{typo}'?{hint}; known: "):
        reg.get(typo)


def test_question_types_are_the_nine_seed_bench_dimensions():
    from dataengine.qtypes import QUESTION_TYPES
    from dataengine.records import QTYPES
    assert sorted(QUESTION_TYPES) == list(range(1, 10))
    assert {t: q.name for t, q in QUESTION_TYPES.items()} == {t: n for t, (n, _) in QTYPES.items()}
