"""Scripted LLMs for tests: answer functions for `FakeLLM(answer=...)`."""
import json
import re

from dataengine.world.render import WORDS

REWRITE = {"confusing": ["'Use only the information given' is vague"],
           "rules": ["Copy the text of the image exactly.", "Give four different options.", "One option is correct. MARKER"]}


def writer(body) -> str:
    """A scripted LLM: rewrites add MARKER to the rules; items are right only under a MARKER prompt."""
    msgs = body["messages"]
    if "improve instructions" in msgs[0]["content"]:
        return json.dumps(REWRITE)
    last = msgs[-1]["content"]
    text = last if isinstance(last, str) else next(c["text"] for c in last if c["type"] == "text")  # vision LLM form
    words = re.findall(r'- "(\w+)"', text)
    if not words:
        return json.dumps({"skip": "this writer only asks about text"})
    word = words[-1]
    others = [w for w in WORDS if w != word][:3]
    short = word if "MARKER" in msgs[0]["content"] else others[0]
    options = [word] + others
    return json.dumps({"question": "What word is written on the sign?", "answer": f'The sign says "{short}".',
                       "short_answer": short, "options": options, "correct": "ABCD"[options.index(short)]})
