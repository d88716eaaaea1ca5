import pytest

from dataengine.dialog.judge import grade_messages, llm_grader, load_grader, read_score
from dataengine.llm.client import LLMClient, LLMConfig
from tests.support.fake_llm import FakeLLM


def test_the_grader_prompt_is_versioned_and_filled():
    p = load_grader("grade-v1")
    assert p.version == 1
    [msg] = grade_messages(p, "What is | shown?", "A red\nball.", "a ball")
    # the row stays one row: no "|" or line break from the texts
    assert msg["content"].rstrip().splitlines()[-1] == "What is / shown? | A red ball. | a ball |"


@pytest.mark.parametrize("text,score", [("0.7", 0.7), ("Correctness: 1.0", 1.0), ("0", 0.0), (".5", 0.5),
                                        ("I think 2 points", None), ("no idea", None), ("1", 1.0)])
def test_reading_a_score(text, score):
    assert read_score(text) == score


def test_replies_are_graded_through_the_cached_client(tmp_path):
    def answer(body):
        text = body["messages"][0]["content"].rstrip().splitlines()[-1]
        return "1.0" if "| It is red. | The ball is red. |" in text else "0.2"
    with FakeLLM(answer=answer) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "cache.sqlite")
        grade = llm_grader(client)
        items = [("What colour is it?", "It is red.", "The ball is red."), ("What colour is it?", "It is red.", "Blue.")]
        assert grade(items) == [1.0, 0.2]
        assert grade(items) == [1.0, 0.2] and len(srv.bodies) == 2  # the second time from the cache
        assert grade.version == "grade-v1"
        client.close()
