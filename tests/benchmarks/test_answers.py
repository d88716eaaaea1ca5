"""Reading letters and yes/no out of free-text replies, by the rules of VLMEvalKit (and POPE)."""
import pytest

from dataengine.benchmarks.answers import (
    extract_letter,
    judge_messages,
    letter_prompt,
    llm_judge,
    yes_no_pope,
    yes_no_vlmevalkit,
)
from dataengine.records import Question

OPTS = ["red", "blue", "green", "black"]


@pytest.mark.parametrize("reply,expected", [
    ("B", ("B", "letter")), ("B.", ("B", "letter")), ("(C) green", ("C", "letter")), ("C: green", ("C", "letter")),
    ("The answer is C.", ("C", "letter")), ("Answer: D", ("D", "letter")), ("**A**", ("A", "letter")),
    ("Option A", ("A", "letter")), ("A above", ("A", "letter")), ("A cat", ("A", "letter")),
    ("The correct answer is **B**. The others are wrong because the picture is clearly of something else", ("B", "letter")),
    ("It is blue.", ("B", "option")), ("green", ("C", "option")),
    # "answer is" takes a capital letter standing alone, not the start of a word
    ("The answer is a dog.", (None, "none")), ("The answer is blue", ("B", "option")), ("answer is b", (None, "none")),
    ("The answer is Black.", ("D", "option")), ("I think the answer is B because A and C are wrong", ("B", "letter")),
    ("purple", (None, "none")), ("", (None, "none")), ("A or B", (None, "none")),  # two letters: none
    ("blue and green", (None, "none")),  # two options' texts
    ("Z", (None, "none")), ("Cannot determine the answer", (None, "none")),
    ("blue " * 20, (None, "none")),  # far longer than the options: not read by text
    # a lone letter early in a long reply is not taken (VLMEvalKit looks at the last words only)
    ("A blue one with a hat", ("B", "option")),
    ("A man stands in front of a blue wall with a hat", (None, "none")),  # and too long to be read by text
])
def test_answer_styles(reply, expected):
    assert extract_letter(reply, OPTS) == expected


def test_options_past_d():
    opts = OPTS + ["white", "grey"]
    assert extract_letter("F", opts) == ("F", "letter") and extract_letter("(E) white", opts) == ("E", "letter")
    assert extract_letter("F", OPTS) == (None, "none")  # not an option of a four-option question


def test_prompt_layouts():
    q = Question(question_id="1", question="What colour is it?", hint="Look closely.", options=OPTS[:3], answer="A", qtype=1, image="x")
    assert letter_prompt(q) == "Look closely.\nWhat colour is it?\nA. red\nB. blue\nC. green\n" \
                               "Answer with the option's letter from the given choices directly."
    assert letter_prompt(q, "mmbench") == "Hint: Look closely.\nQuestion: What colour is it?\nOptions:\nA. red\nB. blue\nC. green\n" \
                                          "Please select the correct answer from the options above. \n"


def test_the_llm_judge_names_the_option_of_a_reply_with_no_letter(tmp_path):
    from dataengine.llm.client import LLMClient, LLMConfig
    from tests.support.fake_llm import FakeLLM
    q = Question(question_id="1", question="What is it?", options=OPTS, answer="D", qtype=1, image="x")
    assert "Answer: it looks dark\nYour output:" in judge_messages(q, "it looks dark")[0]["content"]
    with FakeLLM(answer=lambda body: "D" if "dark" in body["messages"][0]["content"] else "Z") as srv:
        judge = llm_judge(LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "c.sqlite"))
        assert judge([q, q], ["it looks dark", "no idea"]) == ["D", None]


@pytest.mark.parametrize("reply,pope,vlmevalkit", [
    ("Yes, there is a dog.", "yes", "yes"), ("No, there is no dog.", "no", "no"), ("There is not a dog.", "no", "unknown"),
    ("There is a dog. No cat though.", "yes", "no"), ("yes", "yes", "yes"), ("No.", "no", "no"), ("I cannot tell.", "yes", "unknown"),
])
def test_yes_no_rules(reply, pope, vlmevalkit):
    assert yes_no_pope(reply) == pope and yes_no_vlmevalkit(reply) == vlmevalkit
