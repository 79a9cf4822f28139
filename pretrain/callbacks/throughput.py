"""Per-step windows/s, tokens/s and, on GPU, model FLOPs utilisation (MFU) against the chip's peak."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch

from eegfm.pretrain.stream import completes_step

# Dense bf16 peak FLOP/s per GPU, by a substring of the device name (datasheet figures).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16.items() if key in name), None)


class Throughput(pl.Callback):
    """Counts this rank's windows, tokens and model FLOPs between logging steps and logs their rates
    (multiplied by the world size: ranks process micro-batches of the same token budget)."""

    def __init__(self, log_every: int):
        self.log_every = log_every
        self._reset()

    def _reset(self) -> None:
        self.windows = self.tokens = 0
        self.flops = 0.0
        self.started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        size, channels, n_times = batch["eeg"].shape
        n_patches = pl_module.n_patches(n_times)
        self.windows += size
        self.tokens += size * channels * n_patches
        self.flops += pl_module.train_flops(size, channels, n_patches)
        if not completes_step(batch) or trainer.global_step % self.log_every:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.started
        world = trainer.world_size
        rates = {
            "windows_per_s": world * self.windows / seconds,
            "tokens_per_s": world * self.tokens / seconds,
        }
        peak = peak_flops(trainer.strategy.root_device)
        if peak:
            rates["mfu"] = self.flops / seconds / peak
        pl_module.log_dict(rates, on_step=True, rank_zero_only=True)
        self._reset()
