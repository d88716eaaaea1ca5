"""Human review of generated items: a local web page (`dataengine review RUN`, `app.py`) over a run
directory, and the SQLite store of its decisions (`store.py`), which the loop, `mix` and `export`
apply (`store.apply`): rejected items are left out, edited ones replace the originals once they pass
the filter again. IPO's human review can be given in the same page (`llm.ipo.PageJudge`)."""
