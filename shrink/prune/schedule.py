"""When sparsity rises: Zhu & Gupta's (2017) cubic schedule over a run's optimiser steps.

Removing 90% of the weights at once destroys the model; removing them a little
at a time while training continues lets the rest compensate. The cubic shape
prunes fast while many redundant weights remain and slowly near the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shrink.config import PruneConfig
from shrink.errors import ShrinkError

# Before / after the schedule when the config leaves it open: train dense for the
# first 10% of the steps (movement scores learn there), prune over the next 60%,
# recover at the final sparsity for the last 30%.
DEFAULT_START_FRACTION = 0.1
DEFAULT_STEPS_FRACTION = 0.6


@dataclass
class Schedule:
    """Zhu & Gupta's cubic schedule: ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / n)^3``, t0 <= t <= t0 + n."""

    initial: float
    final: float
    start: int
    steps: int
    every: int = 1

    @property
    def end(self) -> int:
        """The step at which the final sparsity is reached."""
        return self.start + self.steps

    def sparsity(self, step: int) -> float:
        """Target sparsity at ``step``: flat before and after the ramp."""
        if step <= self.start:
            return self.initial
        if step >= self.end:
            return self.final
        return self.final + (self.initial - self.final) * (1.0 - (step - self.start) / self.steps) ** 3

    def updates_at(self, step: int) -> bool:
        """Whether masks are recomputed before step ``step``: every ``every`` steps, and at the end."""
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)


def total_steps(cfg: PruneConfig, n_train: int) -> int:
    """Optimiser steps a run takes: epochs of batches, capped by ``max_steps`` (as :func:`shrink.train.fit`)."""
    per_epoch = math.ceil(n_train / cfg.train.batch_size)
    return int(min(cfg.train.epochs * per_epoch, cfg.train.max_steps or math.inf))


def make_schedule(cfg: PruneConfig, total_steps: int) -> Schedule:
    """The schedule for a run of ``total_steps``; refuses one that does not fit in the training."""
    start = cfg.schedule_start if cfg.schedule_start is not None else int(DEFAULT_START_FRACTION * total_steps)
    steps = cfg.schedule_steps if cfg.schedule_steps is not None else max(1, int(DEFAULT_STEPS_FRACTION * total_steps))
    if start + steps > total_steps:
        raise ShrinkError(
            f"prune: schedule_start ({start}) + schedule_steps ({steps}) = {start + steps} is longer "
            f"than the {total_steps} training steps (prune.train epochs x batches per epoch, or max_steps); "
            "shorten the schedule or train longer"
        )
    return Schedule(cfg.initial_sparsity, cfg.target_sparsity, start, steps, cfg.update_every)
