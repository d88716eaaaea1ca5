"""Peak memory of reading chosen images from a large Visual Genome: the streaming reader against
json.load of the whole files.

Writes a synthetic Visual Genome in the official v1.2 layout (per image about 10 objects, 5 of them
with attributes, 5 relationships and 20 region descriptions) into a temporary folder, then measures
each way in a fresh subprocess by its peak resident memory (ru_maxrss):

* baseline: the interpreter with dataengine.pools imported, reading nothing;
* reader:   read_visual_genome for the chosen images, spread over the whole pool (so it reads to the end);
* json.load: the five files loaded whole, as a reader that joins them in memory would.

Usage:

    python bench/pool_memory.py [--images 100000] [--chosen 1000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

VG_FILES = ("image_data.json", "objects.json", "attributes.json", "relationships.json", "region_descriptions.json")
NAMES = ["man", "woman", "tree", "car", "building", "window", "shirt", "sign", "table", "plate", "dog", "grass",
         "sky", "cloud", "street", "pole", "light", "hat", "bag", "wheel", "door", "chair", "water", "boat"]
ATTRIBUTES = ["white", "black", "red", "green", "blue", "large", "small", "wooden", "metal", "tall", "open", "parked"]
PREDICATES = ["on", "has", "wearing", "in", "near", "behind", "holding", "of", "under", "next to", "ON", "sitting on"]
WORDS = ["a", "the", "is", "on", "with", "white", "black", "large", "small", "man", "woman", "tree", "car", "sign",
         "in", "front", "of", "building", "wearing", "shirt", "standing", "near", "street", "blue", "sky", "window"]


def _entry(rng: random.Random, oid: int, width: int, height: int) -> dict[str, Any]:
    name = rng.choice(NAMES)
    x, y = rng.randrange(width - 10), rng.randrange(height - 10)
    return {"synsets": [f"{name}.n.01"], "h": rng.randint(5, height - y), "object_id": oid, "merged_object_ids": [],
            "names": [name], "w": rng.randint(5, width - x), "y": y, "x": x}


def _image(rng: random.Random, image_id: int) -> dict[str, dict[str, Any]]:
    """One image's item for each of the five files."""
    width, height = rng.choice([(800, 600), (500, 333), (1024, 768), (640, 480)])
    folder = "VG_100K" if image_id % 2 else "VG_100K_2"
    url = f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"
    objects = [_entry(rng, image_id * 100 + k, width, height) for k in range(rng.randint(7, 13))]
    attributes = [{**o, "attributes": rng.sample(ATTRIBUTES, rng.randint(1, 2))} if k < 5 else o
                  for k, o in enumerate(objects)]
    relationships = []
    for k in range(rng.randint(3, 7)):
        s, o = rng.sample(objects, 2)
        ends = [{key: e[key] for key in ("synsets", "h", "object_id", "merged_object_ids", "w", "y", "x")}
                | {"name": e["names"][0]} for e in (s, o)]
        relationships.append({"predicate": rng.choice(PREDICATES), "object": ends[1],
                              "relationship_id": image_id * 100 + k, "synsets": ["along.r.01"], "subject": ends[0]})
    regions = []
    for k in range(rng.randint(15, 25)):
        x, y = rng.randrange(width - 10), rng.randrange(height - 10)
        regions.append({"region_id": image_id * 100 + k, "width": rng.randint(5, width - x),
                        "height": rng.randint(5, height - y), "image_id": image_id,
                        "phrase": " ".join(rng.choices(WORDS, k=rng.randint(3, 9))), "y": y, "x": x})
    return {
        "image_data.json": {"width": width, "url": url, "height": height, "image_id": image_id,
                            "coco_id": None, "flickr_id": None},
        "objects.json": {"image_id": image_id, "objects": objects, "image_url": url},
        "attributes.json": {"image_id": image_id, "attributes": attributes},
        "relationships.json": {"relationships": relationships, "image_id": image_id},
        "region_descriptions.json": {"regions": regions, "id": image_id},
    }


def write_vg(vg_dir: Path, images: int) -> None:
    """Write the five files an image at a time, so the writer holds one image, not the pool."""
    rng = random.Random(0)
    with ExitStack() as stack:
        files = {name: stack.enter_context((vg_dir / name).open("w", encoding="utf-8")) for name in VG_FILES}
        for f in files.values():
            f.write("[")
        for image_id in range(1, images + 1):
            for name, item in _image(rng, image_id).items():
                files[name].write(("" if image_id == 1 else ", ") + json.dumps(item))
        for f in files.values():
            f.write("]")


def measure(way: str, vg_dir: Path, chosen: list[int]) -> None:
    """Run in the child process: do one way of reading, then print its peak memory as JSON."""
    from dataengine.pools import read_visual_genome  # imported by every way, so the baselines match

    start = time.perf_counter()
    kept = ""
    if way == "reader":
        with tempfile.TemporaryDirectory() as image_root:  # the reader needs no image files, only a root
            records = list(read_visual_genome(vg_dir, image_root, image_ids=chosen))
        kept = f"{len(records):,} records kept"
    elif way == "json.load":
        files = []
        for name in VG_FILES:
            with (vg_dir / name).open(encoding="utf-8") as f:
                files.append(json.load(f))
        kept = f"{len(files)} files kept"
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(json.dumps({"peak_mib": peak_mib, "seconds": time.perf_counter() - start, "kept": kept}))


def run_child(way: str, vg_dir: Path, chosen: int, images: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--measure", way, "--vg", str(vg_dir), "--chosen", str(chosen),
                          "--images", str(images)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def chosen_ids(images: int, chosen: int) -> list[int]:
    step = max(images // chosen, 1)
    return list(range(step, images + 1, step))[:chosen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--chosen", type=int, default=1000)
    ap.add_argument("--keep", type=Path, default=None, help="write the pool here and keep it (default: a temp dir)")
    ap.add_argument("--measure", choices=["baseline", "reader", "json.load"], help=argparse.SUPPRESS)
    ap.add_argument("--vg", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(args.measure, args.vg, chosen_ids(args.images, args.chosen))
        return

    with ExitStack() as stack:
        vg_dir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vg-bench-")))
        vg_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        write_vg(vg_dir, args.images)
        print(f"wrote a synthetic Visual Genome of {args.images:,} images in {time.perf_counter() - start:.0f} s:")
        total = 0
        for name in VG_FILES:
            size = (vg_dir / name).stat().st_size
            total += size
            print(f"  {name:<26} {size / 2**20:9.1f} MiB")
        print(f"  {'total':<26} {total / 2**20:9.1f} MiB")

        results = {way: run_child(way, vg_dir, args.chosen, args.images) for way in ("baseline", "reader", "json.load")}
        print(f"peak resident memory, each in a fresh process ({args.chosen:,} images chosen across the pool):")
        for way, r in results.items():
            print(f"  {way:<10} {r['peak_mib']:9.1f} MiB  {r['seconds']:6.1f} s  {r['kept']}")
        base = results["baseline"]["peak_mib"]
        reader, whole = results["reader"]["peak_mib"], results["json.load"]["peak_mib"]
        print(f"json.load / reader: {whole / reader:.1f}x peak; {(whole - base) / max(reader - base, 1):.0f}x "
              "above the baseline")


if __name__ == "__main__":
    main()
