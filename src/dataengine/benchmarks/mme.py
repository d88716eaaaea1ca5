"""MME: yes/no question pairs per image; acc, acc+ and score per subtask, as MME's own calculator reports."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from ..errors import DataError
from ..records import read_text

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


class MMEItem(BaseModel):
    subtask: str
    image: str  # relative to the MME root
    question: str
    label: str  # "yes" or "no"
    pair: str = ""  # the picture both questions ask about, when not `image` (MME.tsv's image_path)


def read_mme(root: str | Path, image_dir: str | Path | None = None) -> list[MMEItem]:
    """Read the MME release folder: per subtask either `images/` + `questions_answers_YN/*.txt`, or
    images and .txt files side by side; each .txt line is `question<TAB>Yes|No` about its image. Or
    VLMEvalKit's MME.tsv (its images are written to `image_dir`, its subtask is the category)."""
    root = Path(root)
    if root.suffix.lower() == ".tsv":
        from .yesno import read_yes_no_tsv
        if image_dir is None:
            raise DataError(f"{root}: a TSV needs a folder for its images")
        return [MMEItem(subtask=x.category, image=x.image, question=x.question, label=x.label, pair=x.source)
                for x in read_yes_no_tsv(root, image_dir)]
    if not root.is_dir():
        raise DataError(f"{root}: MME folder not found")
    items = []
    for task in sorted(p for p in root.iterdir() if p.is_dir()):
        qa_dir = task / "questions_answers_YN" if (task / "questions_answers_YN").is_dir() else task
        img_dir = task / "images" if (task / "images").is_dir() else task
        for txt in sorted(qa_dir.glob("*.txt")):
            image = next((img_dir / (txt.stem + ext) for ext in (".jpg", ".png", ".jpeg") if (img_dir / (txt.stem + ext)).exists()), None)
            if image is None:
                raise DataError(f"{txt}: no image {txt.stem}.jpg or .png beside it")
            for n, line in enumerate(read_text(txt).splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.rsplit("\t", 1)
                label = parts[-1].strip().lower() if len(parts) == 2 else ""
                if label not in ("yes", "no"):
                    raise DataError(f"{txt}: line {n}: expected 'question<TAB>Yes|No'")
                items.append(MMEItem(subtask=task.name, image=str(image.relative_to(root)), question=parts[0].strip(), label=label))
    if not items:
        raise DataError(f"{root}: no MME questions found")
    return items


def mme_scores(items: list[MMEItem], answers: list[str]) -> dict:
    """Per subtask: acc (per question), acc+ (per image, both questions right) and score = 100 * (acc + acc+);
    perception and cognition are sums of their subtasks' scores, as MME's own calculator reports."""
    per: dict[str, dict[str, list[bool]]] = {}
    for it, a in zip(items, answers):
        per.setdefault(it.subtask, {}).setdefault(it.pair or it.image, []).append(a == it.label)
    out: dict = {"subtasks": {}}
    for task, images in sorted(per.items()):
        flat = [ok for oks in images.values() for ok in oks]
        acc, acc_plus = sum(flat) / len(flat), sum(all(oks) for oks in images.values()) / len(images)
        out["subtasks"][task] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * (acc + acc_plus)}
    out["perception"] = sum(v["score"] for k, v in out["subtasks"].items() if k in MME_PERCEPTION)
    out["cognition"] = sum(v["score"] for k, v in out["subtasks"].items() if k in MME_COGNITION)
    return out
