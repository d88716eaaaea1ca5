"""What the review page shows of a run directory: each round's generated items, whether the filter
kept them (or why it dropped them), their prompt version, their picture and its annotation; the
round's evolved children (`round_k/evolve/evolved.jsonl`) with their lineage, and which of them the
round's training mix uses; IPO's prompt versions and their items. Read only; nothing is built or
changed here."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..config import load_config
from ..errors import DataError
from ..records import ImageAnnotation, Sample, read_jsonl


@dataclass
class Item:
    round: str  # "1", "2", ... or "ipo-v2"
    sample: Sample
    status: str  # "kept", "rejected" (by the filter), "generated" (not filtered yet) or "evolved"; IPO: "ipo"
    reason: str = ""  # the filter's reason for a rejected item
    parent: Sample | None = None  # an evolved child's parent (a kept item, or a child of an earlier evolution round)

    @property
    def version(self) -> str:
        """The prompt version that wrote the item ("v2"), or the generator's name ("grounded")."""
        m = re.search(r"prompt-(v\d+)$", self.sample.generator)
        return m.group(1) if m else (self.sample.generator or "-")


class RunView:
    """A run directory as the review page reads it. DataError (one line) if it is not one."""

    def __init__(self, run_dir: str | Path, image_root: str | Path | None = None, ipo_dir: str | Path | None = None):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise DataError(f"{self.dir}: no such run directory")
        self.ipo_dir = Path(ipo_dir) if ipo_dir else self.dir / "ipo"
        if not self.rounds() and not self.ipo_versions():
            raise DataError(f"{self.dir}: not a run directory (no round_k/generated.jsonl and no ipo/prompts.jsonl)")
        cfg_path = self.dir / "config.yaml"
        self.cfg = load_config(cfg_path if cfg_path.exists() else None)
        d = self.cfg.data
        if image_root:
            self.image_root = Path(image_root)
        elif d.image_root:
            self.image_root = Path(d.image_root)
        else:
            self.image_root = self.dir / "world" / "images"
        if (image_root or d.image_root) and not self.image_root.is_dir():  # one you named must be there
            raise DataError(f"{self.image_root}: no such image root (the pictures)")
        self.pool_path = Path(d.pool) if d.pool else self.dir / "world" / "pool.jsonl"
        self.benchmark_path = Path(d.benchmark) if d.benchmark else self.dir / "world" / "benchmark.json"
        if d.benchmark_image_root:
            self.benchmark_image_root = Path(d.benchmark_image_root)
        else:  # as stages.resolve_inputs has it: an MMBench TSV's pictures are written into the run directory
            from ..benchmarks import is_mmbench
            self.benchmark_image_root = self.dir / "benchmark_images" if d.benchmark and is_mmbench(d.benchmark) else self.image_root

    # ---- rounds and their items ----
    def rounds(self) -> list[int]:
        out, k = [], 1
        while (self.dir / f"round_{k}").is_dir():
            if (self.dir / f"round_{k}" / "generated.jsonl").exists():
                out.append(k)
            k += 1
        return out

    def items(self, k: int) -> list[Item]:
        """Round k's generated items, each marked kept or rejected (with the filter's reason), then its
        kept evolved children (status "evolved", each with its parent)."""
        if k not in self.rounds():
            raise DataError(f"round {k}: not in {self.dir} (rounds with items: {', '.join(map(str, self.rounds())) or 'none'})")
        rd = self.dir / f"round_{k}"
        generated = read_jsonl(rd / "generated.jsonl", Sample)
        if not (rd / "filtered.jsonl").exists():
            return [Item(str(k), s, "generated") for s in generated]
        kept = {s.id for s in read_jsonl(rd / "filtered.jsonl", Sample)}
        reasons = {}
        if (rd / "rejected.jsonl").exists():
            for s in read_jsonl(rd / "rejected.jsonl", Sample):
                reasons[s.id] = s.source.split(" | ", 1)[1] if " | " in s.source else "dropped"
        out = [Item(str(k), s, "kept" if s.id in kept else "rejected", reasons.get(s.id, "" if s.id in kept else "dropped"))
               for s in generated]
        if (rd / "evolve" / "evolved.jsonl").exists():
            children = read_jsonl(rd / "evolve" / "evolved.jsonl", Sample)
            by_id = {s.id: s for s in [*generated, *children]}
            out += [Item(str(k), c, "evolved", parent=by_id.get(c.lineage.parent)) for c in children if c.lineage]
        return out

    def in_training(self, k: int) -> set[str]:
        """The ids of round k's evolved children that its training mix uses, with the review decisions
        as they stand now in the run's review database: `Loop.incremental` decides it, as for the loop's
        own training."""
        if not (self.dir / f"round_{k}" / "evolve" / "evolved.jsonl").exists():
            return set()
        import io

        from rich.console import Console

        from ..loop import Loop
        loop = Loop(self.cfg, self.dir, console=Console(file=io.StringIO()))
        return {s.id for s in loop.incremental(k, all_rounds=False, recheck=self.recheck) if s.lineage}

    def item(self, round: str, item_id: str) -> Item:
        items = self.ipo_items(_ipo_version(round)) if round.startswith("ipo-v") else self.items(_round_number(round))
        for it in items:
            if it.sample.id == item_id:
                return it
        raise DataError(f"item {item_id}: not in round {round} of {self.dir}")

    # ---- IPO ----
    def ipo_versions(self) -> list:
        path = self.ipo_dir / "prompts.jsonl"
        if not path.exists():
            return []
        from ..llm.prompt import PromptStore
        return PromptStore(path).versions()

    def ipo_items(self, version: int) -> list[Item]:
        path = self.ipo_dir / f"v{version}" / "items.jsonl"
        if not path.exists():
            raise DataError(f"prompt v{version}: no items in {self.ipo_dir} (v{version}/items.jsonl)")
        return [Item(f"ipo-v{version}", s, "ipo") for s in read_jsonl(path, Sample)]

    # ---- pictures and annotations ----
    @cached_property
    def annotations(self) -> dict[str, ImageAnnotation]:
        return {a.image: a for a in read_jsonl(self.pool_path, ImageAnnotation)} if self.pool_path.exists() else {}

    def image_roots(self) -> list[Path]:
        return list(dict.fromkeys([self.image_root.resolve(), self.benchmark_image_root.resolve()]))

    def image_file(self, rel: str) -> Path:
        """The picture at `rel`, only under the run's image roots, and only a picture (by its suffix,
        and PIL can read its header): DataError otherwise, so no other file under a root is served."""
        if "\x00" in rel or rel.startswith(("/", "\\")) or Path(rel).suffix.lower() not in PICTURE_SUFFIXES:
            raise DataError(f"{rel!r}: not a picture of this run")
        for root in self.image_roots():
            path = (root / rel).resolve()
            if path.is_relative_to(root) and path.is_file() and _is_picture(path):
                return path
        raise DataError(f"{rel}: not a picture of this run")

    @cached_property
    def recheck(self):
        """The filter on an edited item, as the loop runs it: format, leaks, the benchmark's pictures,
        the annotation's verdict. Returns "" when the edit passes, else the reason."""
        from .. import stages
        from ..filter import BenchmarkGuard
        guard = None
        if self.benchmark_path.exists():
            from ..benchmarks import read_benchmark
            guard = BenchmarkGuard(read_benchmark(self.benchmark_path, self.benchmark_image_root), self.image_root,
                                   self.benchmark_image_root)
        return stages.edit_check(guard, list(self.annotations.values()), self.cfg)


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


def _is_picture(path: Path) -> bool:
    """PIL reads the file's header as a picture (the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return im.format is not None
    except (UnidentifiedImageError, OSError):
        return False


def _round_number(round: str) -> int:
    try:
        return int(round)
    except ValueError:
        raise DataError(f"round {round!r}: not a round number") from None


def _ipo_version(round: str) -> int:
    try:
        return int(round.removeprefix("ipo-v"))
    except ValueError:
        raise DataError(f"round {round!r}: not a prompt version (ipo-v1, ipo-v2, ...)") from None
