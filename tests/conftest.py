import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)

from tests.support.configs import TINY, small_config  # noqa: E402


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small synthetic world on disk (pool, SEED benchmark, starter set), shared by the tests."""
    from dataengine.world.build import build_world
    return build_world(small_config(), tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def tiny_vlm(world):
    from dataengine.models.tiny import build_tiny
    from dataengine.records import Sample, read_jsonl
    from dataengine.world.build import corpus
    return build_tiny(corpus(read_jsonl(world.original, Sample)), TINY)
