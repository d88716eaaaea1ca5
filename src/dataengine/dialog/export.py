"""Conversations out to other stacks and back: LLaVA's multi-turn conversation JSON (LLaVA,
LLaMA-Factory's sharegpt format: "<image>" once, in the first human turn), and a Hugging Face
`datasets` dataset as Parquet shards with the images embedded. Each entry also keeps every turn's
source, format and item id, which those loaders ignore, so a file loads back into the same
conversations.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ..errors import DataError
from ..images import resolve
from ..records import read_json, write_json
from .conversation import Conversation, Turn, check_items_once


def to_llava(conversations: list[Conversation]) -> list[dict]:
    """One entry per conversation: alternating human / gpt turns, the image placeholder once, first."""
    out = []
    for c in conversations:
        if PurePosixPath(c.image).is_absolute() or ".." in PurePosixPath(c.image).parts:
            raise DataError(f"conversation {c.id}: image path {c.image!r} leaves the image root: not exported")
        turns = []
        for k, t in enumerate(c.turns):
            user = t.user.replace("<image>", "").strip()
            turns += [{"from": "human", "value": f"<image>\n{user}" if k == 0 else user}, {"from": "gpt", "value": t.assistant}]
        out.append({"id": c.id, "image": c.image, "conversations": turns,
                    "turns": [t.model_dump(exclude={"user", "assistant"}) for t in c.turns]})
    return out


def export_llava(conversations: list[Conversation], path: str | Path, image_root: str | Path | None = None) -> Path:
    """LLaVA multi-turn JSON; with `image_root`, every picture is opened first."""
    if image_root is not None:
        _check_pictures(conversations, image_root)
    return write_json(path, to_llava(conversations))


def from_llava(path: str | Path) -> list[Conversation]:
    """Conversations back from a LLaVA multi-turn JSON (`export_llava`'s, or any with human / gpt turns:
    a turn without its record is source "llava", format "sentence", item "<id>-<k>")."""
    path = Path(path)
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: not LLaVA JSON (a list of conversations)")
    out = []
    for n, e in enumerate(entries):
        try:
            cid, image, msgs = str(e["id"]), e["image"], e["conversations"]
            roles = [m["from"] for m in msgs]
            values = [m["value"] for m in msgs]
        except (KeyError, TypeError):
            raise DataError(f"{path}: entry {n}: not a conversation (id, image, conversations of from / value)") from None
        if not msgs or len(msgs) % 2 or roles != ["human", "gpt"] * (len(msgs) // 2):
            raise DataError(f"{path}: conversation {cid}: turns must alternate human, gpt")
        meta = e.get("turns") or []
        if meta and (not isinstance(meta, list) or len(meta) != len(msgs) // 2):
            raise DataError(f"{path}: conversation {cid}: 'turns' must hold one record per human / gpt turn "
                            f"({len(msgs) // 2}), or be left out")
        records = meta or [{"source": "llava", "format": "sentence", "item": f"{cid}-{k}"} for k in range(len(msgs) // 2)]
        for k, m in enumerate(records):
            if not isinstance(m, dict) or {"user", "assistant"} & m.keys():
                raise DataError(f"{path}: conversation {cid}: turn {k}: its record must be an object of source, format, "
                                "item, ... (the text is in 'conversations')")
        with _named(path, cid):
            out.append(Conversation(id=cid, image=image, turns=[
                Turn(user=str(values[2 * k]).replace("<image>", "").strip(), assistant=values[2 * k + 1], **m)
                for k, m in enumerate(records)]))
    _once(path, out)
    return out


def _once(path, conversations: list[Conversation]) -> None:
    try:
        check_items_once(conversations)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


@contextmanager
def _named(path, cid: str):
    """A record that does not fit a Conversation, as a DataError naming the file and the conversation."""
    from pydantic import ValidationError

    from ..config import problem
    try:
        yield
    except ValidationError as e:
        raise DataError(f"{path}: conversation {cid}: {problem(e)}") from None


def _check_pictures(conversations: list[Conversation], image_root: str | Path) -> None:
    from ..images import load_image
    for c in conversations:
        load_image(image_root, c.image, where=f"conversation {c.id}", max_side=32)


def export_hf(conversations: list[Conversation], image_root: str | Path, out_dir: str | Path, shard_size: int = 1000) -> Path:
    """Parquet shards (`data-00000.parquet`, ...): id, image (bytes embedded), image_path, and `turns`
    (user, assistant, source, format, item, annotation each); `datasets.load_dataset("parquet", data_dir=out_dir)`
    or `import_hf` loads them."""
    import datasets
    _check_pictures(conversations, image_root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    turn = {k: datasets.Value("bool" if k == "annotation" else "string") for k in Turn.model_fields}
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "image_path": datasets.Value("string"), "turns": [turn]})  # a list of structs (datasets 3 and 4)
    for i in range(0, max(len(conversations), 1), shard_size):
        rows = []
        for c in conversations[i:i + shard_size]:
            path = resolve(image_root, c.image, where=f"conversation {c.id}")
            rows.append({"id": c.id, "image": {"path": c.image, "bytes": path.read_bytes()}, "image_path": c.image,
                         "turns": [t.model_dump() for t in c.turns]})
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(out_dir / f"data-{i // shard_size:05d}.parquet"))
    return out_dir


def import_hf(data_dir: str | Path, image_root: str | Path) -> list[Conversation]:
    """Conversations back from `export_hf` shards; each image is written to its path under `image_root`."""
    from ..errors import DataError
    from ..export import parquet_rows
    out = []
    for row in parquet_rows(data_dir, image_root, "conversation"):
        if "turns" not in row:
            raise DataError(f"{data_dir}: holds samples, not conversations: leave out --conversations")
        with _named(data_dir, row["id"]):
            out.append(Conversation(id=row["id"], image=row["image_path"], turns=[Turn(**t) for t in row["turns"]]))
    _once(data_dir, out)
    return out
