"""Readers that turn real image-annotation sources into `ImageAnnotation` records.

Formats read, unchanged from their official releases:

* Visual Genome v1.2: image_data.json, objects.json, attributes.json, relationships.json and
  region_descriptions.json in one folder. Each is one big JSON array; they are streamed item by
  item, side by side, so a 100k-image pool never has to fit in memory.
* COCO: captions_*.json and instances_*.json, optionally an LVIS file (instances layout) that adds
  objects. These are loaded whole, as COCO's own tools do.
* A folder of images with a JSONL file of {"image": path, "caption": str} or
  {"image": path, "captions": [str, ...]} lines.

Boxes become (x1, y1, x2, y2) in pixels. Image paths are kept relative to the image root and are
refused when they would leave it ("..", an absolute path elsewhere, a symlink pointing out).
Anything malformed raises `DataError` with one line naming the file and the item.
"""
from __future__ import annotations

from .coco import read_coco
from .folder import read_folder
from .visual_genome import read_visual_genome

__all__ = ["read_coco", "read_folder", "read_visual_genome"]
