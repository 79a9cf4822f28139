"""`make bench-memory`: how a training step's memory grows with the channel count and the window length.

LUNA claims memory linear in the channel count (its learned queries compress any channel set to a fixed
latent per patch), and the Mamba models (FEMBA, LuMamba) memory linear in the sequence length. Both are
claims against attention over every token: REVE attends over channels × patches, CBraMod over channels and
over patches separately. Each objective is built from its shipped config and runs its own batch transform
(masks, targets) and training step on random windows of one size after another.

What is counted, `saved_activation_bytes`: the bytes of the tensors autograd keeps for the backward pass
during one training step's forward, each storage once and parameters left out. This is the memory that
grows with the input: it is exact, it needs no GPU, and it counts what the kernels in use keep. (PyTorch's
CPU attention keeps a log-sum-exp rather than the attention matrix, as flash attention does on a GPU,
except with attention dropout (CBraMod's), where the CPU falls back to the math kernel and keeps the
matrix: quadratic growth here that a GPU's flash attention does not have.) On a GPU the same steps also
report `torch.cuda.max_memory_allocated` in bf16 autocast: the device's own figure, parameters and
optimizer state included.

`python -m eegfm.pretrain.bench_memory [--quick]`; `--quick` measures fewer sizes.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402 - after the thread limits

from eegfm.config import CONFIG_DIR  # noqa: E402
from eegfm.pretrain.config import load_pretrain_config  # noqa: E402

SFREQ = 200  # the shards' rate: a 10-s window is 2,000 samples
# Objective configs compared against the channel count (any montage), and against the window length.
BY_CHANNELS = ("luna_base", "lumamba", "cbramod", "reve_base")
BY_LENGTH = ("femba_tiny", "lumamba", "luna_base", "cbramod", "reve_base")


def saved_activation_bytes(step: Callable[[], Any], parameters: list[torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward while `step()` runs its forward, each storage
    counted once (views of one storage share it), the `parameters`' own storages left out."""
    weights = {p.untyped_storage().data_ptr() for p in parameters}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in weights:
            storages[pointer] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values())


def _module_and_batch(config: str, channels: int, seconds: float, device: str) -> tuple[Any, dict[str, Any]]:
    """The objective of `configs/pretrain/<config>.yaml` for windows of `seconds` (FEMBA: its model is built
    for one length, so n_times follows; its montage is fixed, so `channels` is its own), and one such
    window after the objective's batch transform."""
    from eegfm.pretrain.train import build_module

    samples = round(seconds * SFREQ)
    overrides = [f"model.overrides.n_times={samples}"] if config.startswith("femba") else []
    cfg = load_pretrain_config(CONFIG_DIR / "pretrain" / f"{config}.yaml", overrides)
    torch.manual_seed(0)
    module = build_module(cfg).to(device).train()
    module.log_step = lambda values: None  # no trainer attached: nothing to log to
    count = len(cfg.data.channels) or channels
    generator = torch.Generator().manual_seed(0)
    batch = {
        "eeg": torch.randn(1, count, samples, generator=generator).clamp(-15, 15),
        "positions": torch.rand(1, count, 3, generator=generator) * 0.2 - 0.1,
        "keys": ["0"],
        "epoch": 0,
        "index": 0,
    }
    transform = module.batch_transform()
    batch = transform(batch, generator) if transform else batch
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return module, batch


def step_memory(config: str, channels: int, seconds: float, device: str = "cpu") -> dict[str, float]:
    """One window of `channels` × `seconds` through `config`'s training step: saved-activation MiB, and
    on a GPU the bf16 step's peak allocated MiB (forward, backward and an AdamW step)."""
    module, batch = _module_and_batch(config, channels, seconds, device)
    result = {
        "channels": float(batch["eeg"].shape[1]),
        "saved_mib": saved_activation_bytes(lambda: module.training_step(batch, 0), list(module.parameters()))
        / 2**20,
    }
    if device == "cuda":
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _table(rows: list[tuple[str, list[float]]], header: list[str]) -> str:
    lines = ["  " + f"{'':12s}" + "".join(f"{h:>10s}" for h in header)]
    for name, values in rows:
        lines.append("  " + f"{name:12s}" + "".join(f"{v:10.1f}" for v in values))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    channel_counts = (19, 64) if args.quick else (19, 32, 64, 128, 256)
    lengths = (10.0, 20.0) if args.quick else (10.0, 20.0, 40.0, 80.0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        what = "saved activations, MiB" if device == "cpu" else "peak allocated in bf16, MiB"
        key = "saved_mib" if device == "cpu" else "peak_mib"
        print(f"training-step memory per 10-s window against channels ({what}, {device}):")
        rows = [(c, [step_memory(c, n, 10.0, device)[key] for n in channel_counts]) for c in BY_CHANNELS]
        print(_table(rows, [f"{n} ch" for n in channel_counts]))
        for name, values in rows:
            growth = values[-1] / values[0]
            print(f"  {name}: ×{growth:.1f} from {channel_counts[0]} to {channel_counts[-1]} channels")
        print(f"training-step memory per window against length, 19 channels (FEMBA 18) ({what}, {device}):")
        rows = [(c, [step_memory(c, 19, s, device)[key] for s in lengths]) for c in BY_LENGTH]
        print(_table(rows, [f"{s:g} s" for s in lengths]))
        for name, values in rows:
            print(f"  {name}: ×{values[-1] / values[0]:.1f} from {lengths[0]:g} s to {lengths[-1]:g} s")
    if devices == ["cpu"]:
        print("GPU: none here; on a GPU machine the same steps also print peak allocated memory in bf16")


if __name__ == "__main__":
    main()
