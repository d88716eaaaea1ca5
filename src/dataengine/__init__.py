"""A closed-loop data engine for multimodal LLMs, after MLLM-DataEngine (arXiv 2308.13566)."""
__version__ = "0.1.0"
