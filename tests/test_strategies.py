"""Strategies from config. DeepSpeed's config goes through Lightning's own formatting (what actually
consumes it) and then DeepSpeed's validation, on the CPU; FSDP is built as configured (its training runs
in test_pretrain_hardening.py, two gloo processes)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from conftest import REPO
from lightning.pytorch.plugins.precision import DeepSpeedPrecision
from lightning.pytorch.strategies import FSDPStrategy

from eegfm.errors import ConfigError
from eegfm.pretrain.config import load_pretrain_config
from eegfm.pretrain.train import build_module, build_strategy, deepspeed_strategy

BASE = REPO / "configs" / "pretrain" / "reve_base.yaml"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_pass_lightnings_formatting_and_deepspeeds_validation(stage: int) -> None:
    """Lightning 2.6 refuses a DeepSpeed config that sets `gradient_accumulation_steps` (we used to), and
    fills accumulation and clipping in from the Trainer: check the dict Lightning would hand DeepSpeed."""
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = load_pretrain_config(
        BASE,
        [
            f"trainer.deepspeed={REPO}/configs/pretrain/deepspeed/zero{stage}.yaml",
            "trainer.accumulate=4",
            "trainer.gradient_clip=0.5",
            "model.size=reve_tiny",
        ],
    )
    strategy = deepspeed_strategy(cfg)
    trainer = pl.Trainer(
        accelerator="cpu",
        accumulate_grad_batches=cfg.trainer.accumulate,
        gradient_clip_val=cfg.trainer.gradient_clip,
        logger=False,
        enable_checkpointing=False,
    )
    module = build_module(cfg)
    module.trainer = trainer
    strategy._lightning_module = module
    strategy.precision_plugin = DeepSpeedPrecision("bf16-mixed")
    strategy._format_config()  # raises MisconfigurationException on what Lightning refuses
    validated = DeepSpeedConfig(strategy.config)  # pydantic: unknown or bad keys raise
    assert validated.zero_optimization_stage == stage and validated.bfloat16_config.enabled
    assert validated.gradient_accumulation_steps == 4 and validated.gradient_clipping == 0.5
    assert validated.train_micro_batch_size_per_gpu == 1


def test_deepspeed_on_the_cpu_and_owned_keys_are_clear_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs CUDA"):
        build_strategy(load_pretrain_config(BASE, ["trainer.strategy=deepspeed"]))
    own = tmp_path / "ds.yaml"
    own.write_text("zero_optimization: {stage: 2}\ngradient_accumulation_steps: 4\n")
    with pytest.raises(ConfigError, match=r"remove \['gradient_accumulation_steps'\]"):
        deepspeed_strategy(load_pretrain_config(BASE, [f"trainer.deepspeed={own}"]))


def test_fsdp_shards_transformer_blocks_and_saves_full_state() -> None:
    strategy = build_strategy(load_pretrain_config(REPO / "configs" / "pretrain" / "reve_large.yaml"))
    assert isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "full"
    assert strategy.kwargs["use_orig_params"]  # weight-decay groups by name need the original parameters
