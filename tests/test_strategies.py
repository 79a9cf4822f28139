"""Strategies from config: DeepSpeed ZeRO configs validated by DeepSpeed itself; FSDP built as configured.

Both need CUDA to train (Lightning refuses them on the CPU); their training is measured on a GPU machine.
"""

from __future__ import annotations

import pytest
from conftest import REPO
from lightning.pytorch.strategies import FSDPStrategy

from eegfm.config import load_config
from eegfm.pretrain.train import build_strategy, deepspeed_config

BASE = REPO / "configs" / "pretrain" / "reve_base.yaml"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_configs_validate(stage: int) -> None:
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = load_config(
        BASE,
        [f"trainer.deepspeed={REPO}/configs/pretrain/deepspeed/zero{stage}.yaml", "trainer.accumulate=4"],
    )
    validated = DeepSpeedConfig(deepspeed_config(cfg))  # pydantic: unknown or bad keys raise
    assert validated.zero_optimization_stage == stage and validated.bfloat16_config.enabled
    assert validated.gradient_accumulation_steps == 4 and validated.gradient_clipping == 1.0
    assert validated.train_micro_batch_size_per_gpu == 1


def test_deepspeed_on_the_cpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs CUDA"):
        build_strategy(load_config(BASE, ["trainer.strategy=deepspeed"]))


def test_fsdp_shards_transformer_blocks_and_saves_full_state() -> None:
    strategy = build_strategy(load_config(REPO / "configs" / "pretrain" / "reve_large.yaml"))
    assert isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "full"
    with pytest.raises(ValueError, match="ddp, fsdp or deepspeed"):
        build_strategy(load_config(BASE, ["trainer.strategy=horovod"]))
