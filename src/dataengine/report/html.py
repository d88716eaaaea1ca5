"""One self-contained HTML file for a run (or several, compared): it opens from disk, with no server and
nothing fetched. Plots are drawn with matplotlib and embedded as PNG; pictures as small thumbnails.

What it holds, when the run has it: accuracy per type per round (the held-out part) with ABS's
shares beside it; per round the items planned, generated and kept per type and the filter's
reasons; LLM usage and cost per round, and a ledger of what an accuracy point cost (tokens, money,
training seconds); per round that evolved its items, the evolution figures per operator with a few
parent -> child examples; examples per type (item, picture, and the bad cases that steered it); IPO's
prompt versions with the diff of their rules; CircularEval, POPE and MME tables; for several runs,
their curves overlaid.
"""
from __future__ import annotations

import base64
import difflib
import html
import io
import json
from pathlib import Path

from ..errors import DataError
from ..records import QTYPES, Sample, read_jsonl
from .terminal import run_blind, run_evolution, run_plans, run_results

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}h2{border-bottom:1px solid #ddd;margin-top:2em}
.item{display:flex;gap:12px;margin:8px 0;align-items:flex-start}.item img{width:96px;height:96px;image-rendering:pixelated}
.muted{color:#777}.flag{color:#b00;font-weight:bold}pre{background:#f6f6f6;padding:8px;overflow-x:auto}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _thumb(path: Path) -> str:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((96, 96))
            buf = io.BytesIO()
            im.save(buf, "PNG")
    except (OSError, ValueError):
        return '<span class="muted">(no picture)</span>'
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _name(t: int, names: dict) -> str:
    return html.escape(f"{t}. {names.get(t) or QTYPES.get(t, ('type ' + str(t),))[0]}")


def _curves(runs: dict[str, Path]) -> str:
    """Accuracy per type per round (held-out part), one panel per type, one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = {label: [r.part("report") for r in run_results(d)] for label, d in runs.items()}
    types = sorted({t for rs in series.values() for r in rs for t in r.per_type})
    cols = 5
    rows = (len(types) + 1 + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, t in zip(axes.flat, types + ["overall"]):
        for label, rs in series.items():
            ys = [r.accuracy if t == "overall" else (r.per_type[t].accuracy if t in r.per_type else None) for r in rs]
            ax.plot(range(len(ys)), ys, marker="o", label=label)
        name = "overall" if t == "overall" else next(r.per_type[t].name for rs in series.values() for r in rs if t in r.per_type)
        ax.set_title(f"{t}. {name}" if t != "overall" else name, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.axhline(0.25, color="grey", lw=0.7, ls=":")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(types) + 1:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    return _png(fig)


def _shares(run: Path) -> str:
    """ABS's items per type per round, stacked."""
    import matplotlib.pyplot as plt
    plans = run_plans(run)
    if not plans:
        return ""
    fig, ax = plt.subplots(figsize=(6, 3))
    bottom = [0] * len(plans)
    types = sorted({t for p in plans for t in p.types})
    for t in types:
        counts = [p.types[t].count if t in p.types else 0 for p in plans]
        ax.bar([f"round {k + 1}" for k in range(len(plans))], counts, bottom=bottom, label=plans[0].types.get(t, None) and
               plans[0].types[t].name or str(t))
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_ylabel("items planned")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def _filter_bars(run: Path, k: int) -> str:
    """Round k: items planned, generated and kept per type, and why the rest were dropped."""
    import matplotlib.pyplot as plt
    rd = run / f"round_{k}"
    if not (rd / "filter_report.json").exists():
        return ""
    rep = json.loads((rd / "filter_report.json").read_text())
    gen = read_jsonl(rd / "generated.jsonl", Sample) if (rd / "generated.jsonl").exists() else []
    kept = read_jsonl(rd / "filtered.jsonl", Sample) if (rd / "filtered.jsonl").exists() else []
    types = sorted({s.qtype for s in gen} | {int(t) for t in rep["dropped_by_type"]})
    reasons = sorted({r for d in rep["dropped_by_type"].values() for r in d})
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = [str(t) for t in types]
    kept_n = [sum(s.qtype == t for s in kept) for t in types]
    ax.bar(labels, kept_n, label="kept")
    bottom = kept_n
    for r in reasons:
        vals = [rep["dropped_by_type"].get(str(t), {}).get(r, 0) for t in types]
        ax.bar(labels, vals, bottom=bottom, label=f"dropped: {r}")
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("question type")
    ax.set_ylabel("items generated")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def _ledger(run: Path) -> str:
    """What a point of held-out accuracy cost, per round: tokens, money, training seconds."""
    results = run_results(run)
    rows = []
    for k in range(1, len(results)):
        gain = 100 * (results[k].part("report").accuracy - results[k - 1].part("report").accuracy)
        rep = run / f"round_{k}" / "generate_report.json"
        usage = json.loads(rep.read_text())["usage"] if rep.exists() else {}
        tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        log = run / f"round_{k}" / "model" / "train_log.json"
        seconds = json.loads(log.read_text()).get("seconds") if log.exists() else None
        per = (lambda x: f"{x / gain:,.1f}" if x is not None and gain > 0 else "-")  # noqa: E731
        rows.append([f"round {k}", f"{gain:+.1f}", f"{tokens:,}", per(tokens or None), f"{usage.get('cost', 0):.4f}",
                     per(usage.get("cost") or None), f"{seconds:.0f}" if seconds else "-", per(seconds)])
    return _table(["round", "points gained (held out)", "LLM tokens", "tokens a point", "cost", "cost a point",
                   "training s", "training s a point"], rows)


def _examples(run: Path, image_root: Path | None, per_type: int = 2) -> str:
    plans = run_plans(run)
    out = []
    for k, plan in enumerate(plans, 1):
        path = run / f"round_{k}" / "filtered.jsonl"
        if not path.exists():
            continue
        kept = read_jsonl(path, Sample)
        for t in sorted({s.qtype for s in kept}):
            steer = [e for tp in plan.types.values() if (tp.generator_type or tp.qtype) == t for e in tp.examples][:3]
            for s in [s for s in kept if s.qtype == t][:per_type]:
                pic = _thumb(image_root / s.image) if image_root else ""
                opts = "<br>".join(f"{'<b>' if 'ABCD'[i] == s.choice_answer else ''}{'ABCD'[i]}. {html.escape(o)}"
                                   f"{'</b>' if 'ABCD'[i] == s.choice_answer else ''}" for i, o in enumerate(s.options))
                bad = "".join(f"<li>{html.escape(e.question)} <span class='muted'>(right: "
                              f"{html.escape(e.options['ABCDEFGH'.index(e.answer)])}, said {html.escape(e.prediction or '-')})</span></li>"
                              for e in steer)
                out.append(f'<div class="item">{pic}<div><b>round {k}, {_name(t, {})}</b>: {html.escape(s.instruction)}<br>{opts}'
                           f'<br><span class="muted">{html.escape(s.answer)}</span>'
                           + (f"<br>steered by bad cases:<ul>{bad}</ul>" if bad else "") + "</div></div>")
    return "".join(out) or '<p class="muted">no kept items</p>'


def _ipo(run: Path) -> str:
    path = run / "ipo" / "prompts.jsonl"
    if not path.exists():
        return ""
    from ..llm.prompt import PromptStore
    versions = PromptStore(path).versions()
    rows, diffs, by = [], [], {v.version: v for v in versions}
    for v in versions:
        rows.append([f"v{v.version}", f"v{v.parent}" if v.parent else "-",
                     f"{v.correctness:.0%}" if v.correctness is not None else "-", v.judged])
        if v.parent in by:
            d = "\n".join(difflib.unified_diff(by[v.parent].rules.splitlines(), v.rules.splitlines(), f"v{v.parent}", f"v{v.version}", lineterm=""))
            diffs.append(f"<h4>v{v.parent} &rarr; v{v.version}</h4><pre>{html.escape(d)}</pre>")
    return "<h2>Interactive Prompt Optimization</h2>" + _table(["version", "parent", "correctness", "judged"], rows) + "".join(diffs)


def _benchmark_tables(run: Path) -> str:
    out = []
    for k, _ in enumerate(run_results(run)):
        c = run / f"round_{k}" / "eval" / "circular.json"
        if c.exists():
            data = json.loads(c.read_text())
            out.append(f"<h3>CircularEval, round {k}</h3>" + _table(
                ["category", "questions", "single pass", "circular"],
                [[html.escape(n), v["questions"], f"{v['single']:.1%}", f"{v['circular']:.1%}"]
                 for n, v in {"overall": data["overall"], **data["category"]}.items()]))
    for name in ("pope.json", "mme.json", "shr.json"):
        for f in sorted(run.rglob(name)):
            data = json.loads(f.read_text())
            flat = {k: v for k, v in data.items() if isinstance(v, (int, float))}
            out.append(f"<h3>{html.escape(str(f.relative_to(run)))}</h3>" + _table(list(flat), [[f"{v:.3f}" for v in flat.values()]]))
    return "".join(out)


def _hallucination(run: Path, k: int) -> str:
    """A hallucination round (HA-DPO): SHR and POPE per split before and after DPO, and a few pairs."""
    f = run / f"round_{k}" / "hadpo.json"
    if not f.exists():
        return ""
    data = json.loads(f.read_text())
    splits = list(data["before"]["pope"])
    from ..hadpo import kinds_change, shr_text
    rows = [[when, html.escape(shr_text(data[when]["shr"]) + _loops(data[when]["shr"])),
             *(f"{data[when]['pope'][s]['f1']:.1%} / {data[when]['pope'][s]['accuracy']:.1%} / {data[when]['pope'][s]['yes_ratio']:.2f}"
               for s in splits)] for when in ("before", "after")]
    table = _table(["", "SHR (hallucinated / judged sentences)", *(f"POPE {s}: F1 / accuracy / yes-ratio" for s in splits)], rows)
    pairs = []
    path = run / f"round_{k}" / "pairs.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines()[:4]:
            p = json.loads(line)
            pairs.append([html.escape(p["image"]), html.escape(p["rejected"]), html.escape(p["chosen"]), html.escape("; ".join(p["reasons"]))])
    examples = _table(["image", "rejected (the model's)", "chosen (corrected)", "what was false"], pairs) if pairs else ""
    trained = data.get("trained_pairs", data["pairs"])
    count = f"{trained} of {data['pairs']} pairs trained (the rest off-policy)" if trained != data["pairs"] else f"{data['pairs']} pairs"
    change = kinds_change(data["before"]["shr"], data["after"]["shr"])
    kinds = "<p>" + html.escape(f"Hallucinated sentences by false claim, before -> after: {change}") + "</p>" if change else ""
    return (f"<h2>Round {k}: hallucination round (HA-DPO), {count}, {data['heldout_images']} held-out images</h2>"
            + table + kinds + examples)


def _loops(shr: dict) -> str:
    return f"; {shr['loops']} of {shr['descriptions']} descriptions loop" if "loops" in shr else ""


def _evolution(run: Path, k: int, examples: int = 4) -> str:
    """Round k's evolution (MMEvol), when it evolved its items: per evolution round, children made and
    kept per operator, kept share, mean complexity parent -> child and formats; a few parent -> child
    examples."""
    ev = run / f"round_{k}" / "evolve"
    stats = run_evolution(run).get(k)
    if not stats:
        return ""
    rows = [[f"round {s.round}", s.parents,
             html.escape(", ".join(f"{op} {s.kept.get(op, 0)}/{n}" for op, n in sorted(s.made.items()))),
             f"{s.kept_share:.0%}", f"{s.parent_complexity:.1f} &rarr; {s.mean_complexity:.1f}",
             html.escape(", ".join(f"{f} {n}" for f, n in sorted(s.formats.items(), key=lambda x: -x[1])))] for s in stats]
    table = _table(["evolution round", "parents", "kept / made per operator", "kept share", "mean complexity (parent &rarr; child)",
                    "formats (kept)"], rows)
    known = {s.id: s for s in (read_jsonl(run / f"round_{k}" / "filtered.jsonl", Sample)
                               if (run / f"round_{k}" / "filtered.jsonl").exists() else [])}
    pairs = []
    for s in stats:
        path = ev / f"round_{s.round}" / "children.jsonl"
        children = read_jsonl(path, Sample) if path.exists() else []
        kept = [c for c in children if c.lineage and c.lineage.verdict and c.lineage.verdict.kept]
        pairs += [(s.round, c) for c in kept[:max(1, examples // len(stats))] if c.lineage.parent in known]
        known |= {c.id: c for c in kept}  # a later round's parents are this round's children
    rows = [[f"{c.lineage.operator}, round {r}", html.escape(known[c.lineage.parent].instruction), html.escape(c.instruction),
             html.escape(c.lineage.format), html.escape(c.short_answer)] for r, c in pairs]
    examples_table = _table(["operator", "parent", "child", "format", "answer"], rows) if rows else ""
    return f"<h2>Round {k}: instruction evolution</h2>" + table + examples_table


def write_html(run_dirs: list[str | Path], out: str | Path, image_root: str | Path | None = None) -> Path:
    """The report of the first run (and, with more, all their curves overlaid) into one HTML file.
    `image_root`: where the run's pictures are, for thumbnails (default: the run's world/images)."""
    runs = {Path(d).name or str(d): Path(d) for d in run_dirs}
    for label, d in runs.items():
        if not d.is_dir() or not run_results(d):
            raise DataError(f"{d}: not a run directory with an evaluated round")
    main = next(iter(runs.values()))
    root = Path(image_root) if image_root else (main / "world" / "images" if (main / "world" / "images").is_dir() else None)
    results = run_results(main)
    blind = run_blind(main, len(results))
    names = {t: x.name for r in results for t, x in r.per_type.items()}
    acc_rows = [[_name(t, names)] + [f"{r.part('report').per_type[t].accuracy:.1%}" if t in r.part("report").per_type else "-"
                                     for r in results] for t in sorted(names)]
    acc_rows.append(["<b>overall</b>"] + [f"<b>{r.part('report').accuracy:.1%}</b>" for r in results])
    if any(b for b in blind):
        acc_rows.append(['<span class="muted">blind (grey image)</span>'] + [f"{b.part('report').accuracy:.1%}" if b else "-" for b in blind])
    parts = [f"<h1>Run report: {html.escape(', '.join(runs))}</h1>",
             "<h2>Accuracy per type per round (held-out part)</h2>", _curves(runs),
             _table(["question type"] + [f"round {k}" for k in range(len(results))], acc_rows),
             "<h2>ABS: items planned per type</h2>", _shares(main)]
    for k in range(1, len(results)):
        if bars := _filter_bars(main, k):
            parts += [f"<h2>Round {k}: generated, kept and dropped per type</h2>", bars]
        parts.append(_evolution(main, k))
        parts.append(_hallucination(main, k))
    parts += ["<h2>What a point cost</h2>", _ledger(main), "<h2>Examples per type</h2>", _examples(main, root),
              _ipo(main), _benchmark_tables(main)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(p for p in parts if p)
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>dataengine report</title>"
                   f"<style>{STYLE}</style></head><body>{body}</body></html>", encoding="utf-8")
    return out
