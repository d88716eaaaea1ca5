import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)

from dataengine.config import RunConfig, WorldConfig  # noqa: E402
from dataengine.model import TinyConfig  # noqa: E402

# A very small model and world, so tests run in seconds; the shapes are the embedded default's.
TINY = TinyConfig(image_size=64, patch_size=16, hidden=64, vision_layers=1, text_layers=1, heads=2, vocab_size=500)


def small_config(**over) -> RunConfig:
    cfg = RunConfig(
        rounds=1,
        world=WorldConfig(pool_size=400, benchmark_per_type=4, image_size=64,
                          starter={t: (24 if t in (1, 2, 3) else 6) for t in range(1, 10)}),
    )
    cfg.model.tiny = TINY
    cfg.model.base_epochs = 1
    cfg.model.vision_pretrain_steps = 10
    cfg.sample.budget = 45
    cfg.evaluate.batch_size = 12
    return cfg.model_copy(update=over)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small synthetic world on disk (pool, SEED benchmark, starter set), shared by the tests."""
    from dataengine.loop import build_world
    return build_world(small_config(), tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def tiny_vlm(world):
    from dataengine.loop import corpus
    from dataengine.model import build_tiny
    from dataengine.records import Sample, read_jsonl
    return build_tiny(corpus(read_jsonl(world.original, Sample)), TINY)
