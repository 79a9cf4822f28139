"""Codebook health of a tokenizer run: perplexity, share of codes used recently, dead codes, and the
check that every rank holds the same codebooks.

Logged every `log_every` steps: `codebook_perplexity` (exp of the entropy of the recent code
distribution, averaged over codebooks), `codebook_usage` (share of codes used in the last `window`
micro-batches, averaged) and `codebook_usage_min`, and `dead_codes` (codes whose EMA usage is below the
restart threshold, summed). Under DDP the codebooks are compared bit for bit across ranks at the same
steps; a difference stops the run (the public LaBraM code lets ranks drift apart unnoticed).
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

import lightning.pytorch as pl
import torch

from eegfm.pretrain.stream import completes_step


def codebooks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's codebooks in code-id column order (branch-major, then residual level)."""
    return [m for m in model.modules() if hasattr(m, "cluster_size") and hasattr(m, "embed")]


class CodebookHealth(pl.Callback):
    def __init__(self, log_every: int, window: int = 50):
        self.log_every, self.window = log_every, window
        self.recent: deque[torch.Tensor] = deque(maxlen=window)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        size = pl_module.config.codebook_size
        ids = outputs["indices"].reshape(-1, outputs["indices"].shape[-1])
        counts = torch.stack([torch.bincount(ids[:, j], minlength=size) for j in range(ids.shape[1])])
        self.recent.append(counts.cpu())
        books = codebooks(pl_module.model)
        if not completes_step(batch):
            return
        if trainer.global_step == 1:
            self._check_ranks_agree(trainer, books)  # right after the k-means initialisation
        if trainer.global_step % self.log_every:
            return
        total = torch.stack(list(self.recent)).sum(dim=0).float()  # (codebooks, size)
        p = total / total.sum(dim=1, keepdim=True)
        entropy = -(p * p.clamp(min=1e-12).log()).sum(dim=1)
        usage = (total > 0).float().mean(dim=1)
        threshold = pl_module.config.dead_code_threshold
        pl_module.log_dict(
            {
                "codebook_perplexity": float(entropy.exp().mean()),
                "codebook_usage": float(usage.mean()),
                "codebook_usage_min": float(usage.min()),
                "dead_codes": float(sum(int((b.cluster_size < threshold).sum()) for b in books)),
            },
            on_step=True,
            rank_zero_only=True,
        )
        self._check_ranks_agree(trainer, books)

    @staticmethod
    def _check_ranks_agree(trainer: pl.Trainer, books: list[torch.nn.Module]) -> None:
        if trainer.world_size == 1:
            return
        digest = hashlib.sha256()
        for book in books:
            digest.update(book.embed.detach().cpu().contiguous().numpy().tobytes())
        gathered = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, digest.hexdigest())
        if len(set(gathered)) > 1:
            raise RuntimeError(f"codebooks differ across ranks at step {trainer.global_step}: {gathered}")
