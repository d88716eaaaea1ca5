"""Instruction evolution after MMEvol (arXiv 2409.05840): items the loop already has grow harder and
more varied by three operators (fine-grained perception, cognitive reasoning, interaction in other
task formats), and a judge eliminates every evolution that is not more complex and still correct.

- `grammar`: the evolved items' language, read back against an annotation (the verifier, and the
  complexity the judge compares);
- `operators`: the grounded operators, exact from the annotation;
- `llm`: the LLM operators and judge, with their versioned prompt;
- `judge`: the grounded and LLM judges;
- `rounds`: `evolve`, rounds of operators and elimination over a set of items, resumable.
"""
