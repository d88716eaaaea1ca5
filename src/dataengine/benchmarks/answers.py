"""Reading a model's free-text answer: the prompts that list the options, the letter a reply names
(the rules of VLMEvalKit's `can_infer`, so scores agree with its leaderboards), an LLM judge for
replies that name none, and yes / no read from a reply (POPE's rule or VLMEvalKit's).
"""
from __future__ import annotations

import re

from ..records import LETTERS, Question
from ..registry import Registry

LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."

# How the options are put to the model: LLaVA's evaluation layout, or MMBench's / VLMEvalKit's.
PROMPTS: Registry = Registry("letter prompt layout")


@PROMPTS.register("llava")
def _llava(q: Question) -> str:
    opts = "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, q.options))
    return f"{q.text}\n{opts}\n{LETTER_INSTRUCTION}"


@PROMPTS.register("mmbench")
def _mmbench(q: Question) -> str:
    opts = "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, q.options))
    hint = f"Hint: {q.hint}\n" if q.hint else ""
    return f"{hint}Question: {q.question}\nOptions:\n{opts}\nPlease select the correct answer from the options above. \n"


def letter_prompt(q: Question, layout: str = "llava") -> str:
    return PROMPTS.get(layout)(q)


# Replies that decline to answer: no option (VLMEvalKit counts them as the non-option "Z").
REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
            "I'm sorry, but without the image provided", "Cannot determine the answer")
_PUNCTUATION = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
# VLMEvalKit's rule for verbose replies ("The correct answer is **B**."), with the letter required to
# stand alone in capitals: its own pattern ignores case and would read "the answer is a dog" as A.
_ANSWER_IS = re.compile(r"(?i:(?:correct\s+)?answer\s+is)\s+\**([A-H])\**(?![A-Za-z])")


def extract_letter(text: str, options: list[str]) -> tuple[str | None, str]:
    """The option a free-text reply names, and how it was read: "letter" (a letter standing alone
    among the reply's last words, or "answer is X"), "option" (the reply contains the text of exactly
    one option, and is not much longer than the options), or "none". The rules are VLMEvalKit's: "B",
    "(B)", "The answer is C.", "Answer: D", "**A**", "Option A" and "A above" all name a letter."""
    letters = LETTERS[:len(options)]
    if any(r in text for r in REFUSALS):
        return None, "none"
    words = text.translate(_PUNCTUATION).split()
    named = [l for l in letters if l in words]
    if len(named) == 1 and words.index(named[0]) > len(words) - 5:
        return named[0], "letter"
    if not named and "Z" in words:  # "Z": the reply itself says no option fits
        return None, "none"
    m = _ANSWER_IS.search(text)
    if m and m.group(1) in letters:
        return m.group(1), "letter"
    low = text.lower()
    if len(low) <= 2 * sum(len(o) for o in options):
        hits = [l for l, o in zip(letters, options) if o.lower() in low]
        if len(hits) == 1:
            return hits[0], "option"
    return None, "none"


def judge_messages(q: Question, reply: str) -> list[dict]:
    """Asking an LLM which option a reply means (VLMEvalKit's fallback for replies with no letter)."""
    opts = " ".join(f"{l}. {o}" for l, o in zip(LETTERS, q.options))
    letters = ", ".join(LETTERS[:len(q.options)])
    return [{"role": "user", "content":
             "You match an answer to the options of a single-choice question: find the option most similar in "
             f"meaning to the answer. Output one capital letter ({letters}), or Z if the answer means none of them.\n"
             "Question: What is the main object in the image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
             "Answer: a cute teddy bear\nYour output: A\n"
             "Question: What is the main object in the image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
             "Answer: Spider\nYour output: Z\n"
             f"Question: {q.text}\nOptions: {opts}\nAnswer: {reply}\nYour output:"}]


def llm_judge(client):
    """A `judge` for `evaluate`: the LLM behind `client` names the option each reply means (one
    request per reply, cached); None where it names none."""
    from ..llm.client import LLMError

    def judge(questions: list[Question], replies: list[str]) -> list[str | None]:
        answers = client.run([client.body(judge_messages(q, r), seed=0, max_tokens=8) for q, r in zip(questions, replies)])
        return [None if isinstance(a, LLMError) else extract_letter(a.text, q.options)[0] for q, a in zip(questions, answers)]
    return judge


# ---- yes / no ----

def yes_no_pope(text: str) -> str:
    """POPE's own rule: the first sentence; "no" if it has the word no or not, else "yes"."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def yes_no_vlmevalkit(text: str) -> str:
    """VLMEvalKit's rule: "yes" if the reply has the word yes and not no, "no" the other way round,
    "unknown" otherwise (counted as wrong)."""
    words = [w.strip(".,!?;:\"'()") for w in text.lower().split()]
    yes, no = "yes" in words, "no" in words
    return "yes" if yes and not no else "no" if no and not yes else "unknown"


YES_NO_RULES: Registry = Registry("yes/no rule")
YES_NO_RULES.register("pope", yes_no_pope)
YES_NO_RULES.register("vlmevalkit", yes_no_vlmevalkit)
