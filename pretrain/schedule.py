"""REVE's learning-rate shape over the whole run: linear warm-up, a plateau, a cosine cool-down."""

from __future__ import annotations

import math


def warmup_plateau_cooldown(
    step: int, total_steps: int, warmup_fraction: float, cooldown_fraction: float, min_ratio: float
) -> float:
    """Multiplier of the peak learning rate at `step` of a `total_steps` run (never re-warmed per epoch).

    Warm-up ends at `warmup_fraction` of the run, cool-down starts `cooldown_fraction` before its end and
    reaches `min_ratio` at the last step.
    """
    if min(warmup_fraction, cooldown_fraction) < 0 or warmup_fraction + cooldown_fraction > 1:
        raise ValueError(f"warm-up {warmup_fraction} + cool-down {cooldown_fraction} must fit in one run")
    warmup = round(warmup_fraction * total_steps)
    cooldown = round(cooldown_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    decay_start = total_steps - cooldown
    if step < decay_start or cooldown == 0:
        return 1.0
    progress = min((step - decay_start + 1) / cooldown, 1.0)  # min_ratio at the last step
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
