"""Geometry of boxes, as the question types, the synthetic world and the verifier all define it.

Boxes are (x1, y1, x2, y2) in pixels, origin at the top left.
"""
from __future__ import annotations

Box = tuple[float, float, float, float]

QUADRANTS = ["top left", "top right", "bottom left", "bottom right"]
# A relation as the annotation names it -> as an answer says it.
DIRECTIONS = {"left of": "to the left", "right of": "to the right", "above": "above", "below": "below"}
CONTACTS = ["inside", "overlapping", "touching", "apart"]


def overlap(a: Box, b: Box, gap: float = 0.0) -> bool:
    """True when the boxes overlap once each is grown by `gap` pixels."""
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def contact(a: Box, b: Box) -> str:
    """The contact between two boxes: one of CONTACTS, or "near" (neither touching nor clearly
    apart, so never asked)."""
    if a[0] >= b[0] and a[1] >= b[1] and a[2] <= b[2] and a[3] <= b[3]:
        return "inside"
    if overlap(a, b):
        return "overlapping"
    if overlap(a, b, gap=1.5):
        return "touching"
    if overlap(a, b, gap=10):
        return "near"
    return "apart"


def direction(a: Box, b: Box) -> str | None:
    """Where box a is relative to box b ("left of", "right of", "above", "below"), when one axis
    clearly dominates; None otherwise."""
    ax, ay = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bx, by = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    dx, dy = ax - bx, ay - by
    if abs(dx) > 2 * abs(dy) and abs(dx) > 8:
        return "left of" if dx < 0 else "right of"
    if abs(dy) > 2 * abs(dx) and abs(dy) > 8:
        return "above" if dy < 0 else "below"
    return None


def quadrant(box: Box, width: int, height: int) -> str | None:
    """The quadrant of the image that holds the box's centre; None when the centre is within a
    twelfth of the width of a middle line (too close to call)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    margin = width / 12
    if abs(cx - width / 2) < margin or abs(cy - height / 2) < margin:
        return None
    return ("top" if cy < height / 2 else "bottom") + " " + ("left" if cx < width / 2 else "right")


# The 3x3 grid region descriptions place objects on ("a small red ball at the top left").
CELLS = ("top left", "top center", "top right", "middle left", "center", "middle right",
         "bottom left", "bottom center", "bottom right")
_ROWS = {"top": (0, 1 / 3), "middle": (1 / 3, 2 / 3), "bottom": (2 / 3, 1)}
_COLS = {"left": (0, 1 / 3), "center": (1 / 3, 2 / 3), "right": (2 / 3, 1)}


def grid_cell(box: Box, width: float, height: float) -> str:
    """The cell of `CELLS` that holds the box's centre."""
    cx, cy = (box[0] + box[2]) / 2 / (width or 1), (box[1] + box[3]) / 2 / (height or 1)
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "center"
    return "center" if row == "middle" and col == "center" else f"{row} {col}"


def in_grid_cell(box: Box, width: float, height: float, name: str, margin: float = 1 / 12) -> bool:
    """Whether the box's centre lies in cell `name` of `CELLS`, or in the row ("top", "bottom") or
    column ("left", "right") it names, or within `margin` (a share of the side) of it: a centre near
    a grid line may be said to lie on either side of it."""
    cx, cy = (box[0] + box[2]) / 2 / (width or 1), (box[1] + box[3]) / 2 / (height or 1)
    name = {"center": "middle center", "left": "any left", "right": "any right"}.get(name, name)
    row, _, col = name.partition(" ")
    (r0, r1), (c0, c1) = _ROWS.get(row, (0, 1)), _COLS.get(col, (0, 1))
    return r0 - margin <= cy <= r1 + margin and c0 - margin <= cx <= c1 + margin
