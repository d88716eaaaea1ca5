"""Small configs, so tests run in seconds; the shapes are the embedded default's."""
from dataengine.config import RunConfig, WorldConfig
from dataengine.models.tiny import TinyConfig

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
