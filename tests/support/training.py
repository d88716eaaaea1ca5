"""Stopping a training midway, as Ctrl-C would."""
import contextlib

import pytest


@contextlib.contextmanager
def killed_at_step(step: int):
    """Inside the block every `transformers` Trainer (TRL's included) raises KeyboardInterrupt at the
    end of `step`; the block expects it."""
    import transformers
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == step:
                raise KeyboardInterrupt
    original_init = transformers.Trainer.__init__

    def init_with_kill(self, *a, **kw):
        original_init(self, *a, **kw)
        self.add_callback(Kill())
    with pytest.MonkeyPatch.context() as m:
        m.setattr(transformers.Trainer, "__init__", init_with_kill)
        with pytest.raises(KeyboardInterrupt):
            yield
