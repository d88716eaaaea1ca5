"""Multi-round dialog data and multi-round evaluation, after "COCO is ALL you need for visual
instruction fine-tuning" (Han et al., arXiv 2401.08968): every item of an image merged into one
conversation, each turn with the format instruction of its source (`merge.py`); conversations
trained with the loss on every assistant turn (`VLM.encode_conversations`); a dialog benchmark whose
later turns depend on earlier ones, scored turn by turn (`benchmark.py`); an LLM grader for
open-ended answers on real data (`judge.py`); LLaVA multi-turn JSON and Hugging Face export (`export.py`).
"""
from .conversation import FORMATS, Conversation, Turn, complies, format_box

__all__ = ["FORMATS", "Conversation", "Turn", "complies", "format_box"]
