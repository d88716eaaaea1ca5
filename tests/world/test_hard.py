"""The hard benchmark: evolution's kinds of question on scenes of their own, every answer confirmed
by the scene's annotation, none of its scenes in the pool."""
from dataengine.benchmarks.seed import read_seed
from dataengine.qtypes import verify
from dataengine.records import ImageAnnotation, Lineage, Sample, read_jsonl
from dataengine.world.hard import CATEGORIES, build_hard
from dataengine.world.render import VOCABULARY
from tests.support.configs import small_config


def test_hard_benchmark_answers_follow_from_its_scenes(tmp_path):
    cfg = small_config()
    path = build_hard(cfg, tmp_path, per_category=8)
    questions = read_seed(path)
    assert {q.category for q in questions} == set(CATEGORIES) and len(questions) == 8 * len(CATEGORIES)
    scenes = {a.image: a for a in read_jsonl(tmp_path / "hard_scenes.jsonl", ImageAnnotation)}
    for q in questions:
        item = Sample(id=q.question_id, image=q.image, instruction=q.question, answer="", short_answer=q.options["ABCD".index(q.answer)],
                      options=q.options, choice_answer=q.answer, qtype=1, lineage=Lineage(parent="", root="", operator="", round=0))
        assert verify(item, scenes[q.image], VOCABULARY) == "", q.question
        assert q.image.startswith("hard/")  # scenes of its own, never the pool's ("pool/...")
    assert build_hard(cfg, tmp_path, per_category=8) == path and read_seed(path) == questions  # kept, not rebuilt
