"""Adaptive Bad-case Sampling (ABS): share the next incremental set across question types by weakness,
and pick bad cases of each type as in-context examples for the generator.

Strategies are named and registered, so an ablation is a config change:
- `error` (MLLM-DataEngine v1; the default): r_i = 1 - a_i, normalised over types;
- `sqrt-error` (v2): r_i = sqrt(1 - a_i), normalised;
- `uniform`: the same share for every type (the ablation baseline);
- `progress` (this project's): sqrt-error scaled by how the type responded to the items it got the
  round before (learning progress), so the budget moves away from types that do not respond.
"""
from __future__ import annotations

import difflib
import math
import random
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import DataError
from .records import LETTERS, Prediction, qtype_name
from .registry import Registry


@dataclass(frozen=True)
class TypeStats:
    """What a strategy knows of one type."""
    accuracy: float  # on the diagnosis part, this round
    previous: float | None = None  # the round before (None in round 1)
    items: int = 0  # incremental items the type got in the round just trained
    questions: int = 0  # diagnosis questions behind `accuracy` (its noise)


# name -> f(TypeStats) -> the type's unnormalised weight
STRATEGIES: Registry[Callable[[TypeStats], float]] = Registry("sampling strategy")
register = STRATEGIES.register


@register("sqrt-error")
def _sqrt_error(s: TypeStats) -> float:
    return math.sqrt(max(0.0, 1.0 - s.accuracy))


@register("error")
def _error(s: TypeStats) -> float:
    return max(0.0, 1.0 - s.accuracy)


@register("uniform")
def _uniform(s: TypeStats) -> float:
    return 1.0


@register("progress")
def _progress(s: TypeStats) -> float:
    """sqrt(1 - a), times the type's learning progress: its change since the round before, in units of
    that change's standard error, mapped to a factor from 0.25 (fell) through 1 (no change) to 2
    (rose clearly). A type that got no items, or round 1, keeps sqrt-error's weight."""
    base = _sqrt_error(s)
    if s.previous is None or s.items == 0 or s.questions == 0:
        return base
    var = (s.accuracy * (1 - s.accuracy) + s.previous * (1 - s.previous)) / s.questions
    z = (s.accuracy - s.previous) / math.sqrt(max(var, 0.25 / s.questions))
    return base * min(2.0, max(0.25, 1 + z / 4))


def ratios(accuracies: dict[int, float | TypeStats], strategy: str = "error") -> dict[int, float]:
    """Each type's share of the next incremental set (accuracies, or what each type's `TypeStats`
    says). Falls back to uniform if every type gets weight 0 (all perfect)."""
    fn = STRATEGIES.get(strategy)
    stats = {t: a if isinstance(a, TypeStats) else TypeStats(accuracy=a) for t, a in accuracies.items()}
    raw = {t: fn(x) for t, x in sorted(stats.items())}
    total = sum(raw.values())
    if total <= 0:
        return {t: 1 / len(raw) for t in raw}
    return {t: r / total for t, r in raw.items()}


def allocate(shares: dict[int, float], budget: int) -> dict[int, int]:
    """Whole item counts that sum to the budget exactly (largest remainder)."""
    exact = {t: s * budget for t, s in shares.items()}
    counts = {t: int(math.floor(v)) for t, v in exact.items()}
    left = budget - sum(counts.values())
    for t in sorted(exact, key=lambda t: (counts[t] - exact[t], t))[:left]:
        counts[t] += 1
    return counts


def near_duplicates_removed(cases: list[Prediction], threshold: float = 0.9, embedder=None) -> list[Prediction]:
    """Drop bad cases whose question and answer read almost the same as one already kept: by sentence
    embeddings (cosine, as the paper) when an embedder is given, else by character overlap."""
    if embedder is not None:
        from .embed import bad_case_text, near_duplicates
        drop = near_duplicates([bad_case_text(c) for c in cases], embedder, threshold)
        return [c for i, c in enumerate(cases) if i not in drop]
    kept: list[tuple[str, Prediction]] = []
    for c in cases:
        text = f"{c.question.lower()} || {c.options[LETTERS.index(c.answer)].lower()}"
        if all(difflib.SequenceMatcher(None, text, k).ratio() < threshold for k, _ in kept):
            kept.append((text, c))
    return [c for _, c in kept]


class TypePlan(BaseModel):
    """One type's share of the round. A plan written by hand needs only `qtype` and `count`."""
    model_config = ConfigDict(extra="forbid")
    qtype: int  # the benchmark's type (for MMBench, the number of a category)
    count: int = Field(ge=0)
    name: str = ""  # default: the SEED-Bench type's name
    accuracy: float | None = None  # what ABS planned from
    ratio: float | None = None  # the type's share of the budget
    examples: list[Prediction] = []  # bad cases the generator is shown
    generator_type: int | None = None  # the SEED-Bench type 1-9 that writes its items; None: the type itself

    @model_validator(mode="after")
    def named(self):
        self.name = self.name or qtype_name(self.qtype)
        return self


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: str = "by hand"
    budget: int | None = None  # default: the types' counts, summed
    types: dict[int, TypePlan]
    unmapped: list[str] = []  # benchmark types no generator writes: they were given no items
    # benchmark type -> why the pool cannot supply its generator type (e.g. no OCR text): no items either
    unavailable: dict[str, str] = {}

    @model_validator(mode="after")
    def consistent(self):
        for t, tp in self.types.items():
            if tp.qtype != t:
                raise ValueError(f"types.{t}: qtype is {tp.qtype}, not {t}")
        if self.budget is None:
            self.budget = sum(tp.count for tp in self.types.values())
        return self

    def generator_types(self) -> dict[int, int]:
        """Benchmark type -> the generator type that writes its items (types given no items left out)."""
        return {t: p.qtype if p.generator_type is None else p.generator_type
                for t, p in self.types.items() if p.name not in self.unmapped and p.name not in self.unavailable}

    def counts(self) -> dict[int, int]:
        """Items to generate per generator type: the counts of the benchmark types it writes, summed."""
        out: dict[int, int] = {}
        for t, g in self.generator_types().items():
            out[g] = out.get(g, 0) + self.types[t].count
        return out

    def examples(self) -> dict[int, list[Prediction]]:
        """In-context bad cases per generator type: those of every benchmark type it writes."""
        out: dict[int, list[Prediction]] = {}
        for t, g in self.generator_types().items():
            out.setdefault(g, []).extend(self.types[t].examples)
        return out


def plan(accuracies: dict[int, float], badcases: list[Prediction], budget: int, strategy: str = "error",
         examples_per_type: int = 10, dedup_threshold: float = 0.9, seed: int = 0, embedder=None,
         names: dict[int, str] | None = None, stats: dict[int, TypeStats] | None = None) -> Plan:
    """The ABS plan for the next round: counts per type and in-context bad cases per type. `stats`
    (from the second round on) tell history-aware strategies what each type did the round before."""
    if budget < 0:
        raise DataError(f"budget must be at least 0, got {budget}")
    if not accuracies:
        raise DataError("no per-type accuracies to plan from (empty evaluation)")
    shares = ratios({t: (stats or {}).get(t) or a for t, a in accuracies.items()}, strategy)
    counts = allocate(shares, budget)
    rng = random.Random(seed)
    types = {}
    for t in shares:
        cases = [c for c in badcases if c.qtype == t]
        rng.shuffle(cases)
        # Only as many candidates as needed, since the de-duplication is quadratic.
        chosen = near_duplicates_removed(cases[: examples_per_type * 20], dedup_threshold, embedder)[:examples_per_type]
        types[t] = TypePlan(qtype=t, name=(names or {}).get(t) or qtype_name(t), accuracy=accuracies[t], ratio=shares[t], count=counts[t],
                            examples=chosen)
    return Plan(strategy=strategy, budget=budget, types=types)


def to_generator_types(p: Plan, types: dict[int, int | None], unavailable: dict[int, str] | None = None) -> Plan:
    """Hand a plan over benchmark types (e.g. MMBench categories) to generators that write SEED-Bench's
    nine types: `types` names each benchmark type's generator type, or None (absent) where there is
    none. Those get no items and are listed in `unmapped`; so are the types whose generator type the
    pool cannot supply (`unavailable`: generator type -> why), listed with the reason. The others'
    shares are renormalised, so the whole budget is still spent, and several types mapped to one
    generator type add up there."""
    unavailable = unavailable or {}
    mapped = {t: tp.ratio for t, tp in p.types.items() if types.get(t) is not None and types[t] not in unavailable}
    if not mapped and p.budget > 0:
        if any(types.get(t) in unavailable for t in p.types):
            raise DataError("the pool can supply none of the benchmark's types: "
                            + "; ".join(f"{tp.name}: {unavailable[types[t]]}" for t, tp in p.types.items() if types.get(t) in unavailable))
        raise DataError(f"no benchmark type has a generator type ({', '.join(tp.name for tp in p.types.values())}); "
                        f"map them to SEED-Bench types 1-9 with generate.type_map")
    total = sum(mapped.values())
    # If every mapped type is perfect, ABS gives them nothing; share the budget evenly instead.
    shares = {t: r / total if total > 0 else 1 / len(mapped) for t, r in mapped.items()}
    counts = allocate(shares, p.budget) if mapped else {}
    return p.model_copy(update={
        "types": {t: tp.model_copy(update={"ratio": shares.get(t, 0.0), "count": counts.get(t, 0), "generator_type": types.get(t)})
                  for t, tp in p.types.items()},
        "unmapped": [tp.name for t, tp in p.types.items() if types.get(t) is None],
        "unavailable": {tp.name: unavailable[types[t]] for t, tp in p.types.items() if types.get(t) in unavailable},
    })
