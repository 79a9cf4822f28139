"""Classification heads for fine-tuning: an encoder's tokens (B, N, E) → class logits (B, n_classes).

Plain PyTorch, no I/O and no Lightning. Two kinds, as REVE and LaBraM fine-tune:

- `attention`: REVE's pooling, one learned query scores every token and the softmax-weighted sum is the
  window's vector (`models.features.AttentionPool`), then LayerNorm → Linear. Works for any montage and
  window length, since the number of tokens does not enter the weights.
- `flatten`: every token's features side by side, then LayerNorm → Linear over N·E features. Keeps where
  each channel and patch is, but fixes N: every window of the task must have the same channels × patches.
"""

from __future__ import annotations

import torch
from torch import nn

from eegfm.models.features import AttentionPool

HEAD_KINDS = ("attention", "flatten")


class ClassificationHead(nn.Module):
    """(B, N, E) tokens → (B, n_classes) logits; `tokens` (N) is needed by `flatten` only."""

    def __init__(
        self,
        kind: str,
        dim: int,
        n_classes: int,
        tokens: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head kind {kind!r}: one of {HEAD_KINDS}")
        if kind == "flatten" and not tokens:
            raise ValueError("a flatten head needs the number of tokens per window")
        self.kind, self.tokens = kind, tokens
        features = dim if kind == "attention" else dim * int(tokens or 0)
        self.pool = AttentionPool(dim, generator) if kind == "attention" else None
        self.norm = nn.LayerNorm(features)
        self.linear = nn.Linear(features, n_classes)
        with torch.no_grad():  # drawn from `generator`, so that a seed alone fixes the head
            bound = features**-0.5
            self.linear.weight.copy_(
                (torch.rand(self.linear.weight.shape, generator=generator) * 2 - 1) * bound
            )
            self.linear.bias.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            pooled = self.pool(tokens)
        else:
            if tokens.shape[1] != self.tokens:
                raise ValueError(f"a flatten head built for {self.tokens} tokens got {tokens.shape[1]}")
            pooled = tokens.flatten(1)
        return self.linear(self.norm(pooled))
