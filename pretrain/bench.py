"""`make bench-train`: loader windows/s per core, CPU model throughput, and GPU tokens/s and MFU.

- Loader: fixture corpora of 19-22 (TUEG-, CHB-MIT-like) and 64 channels (BioSemi-like) are ingested into
  local shards; one process streams micro-batches of REVE's 4,800 channel-window budget (ranged reads,
  decode, normalisation, batching, the MAE's masks) on one core. Target: 4,000 windows/s per core for
  20 channels (the streaming issue).
- `eegfm tokenize`: windows/s on one core with a tiny and a full-size (labram_vqnsp) tokenizer.
- Models on the CPU: training steps of the `reve_tiny` MAE and a tiny VQ-NSP tokenizer, windows/s.
- Models on a GPU (when there is one): `reve_base` MAE and `labram_vqnsp` tokenizer steps in bf16 autocast
  with AdamW, tokens/s and model FLOPs utilisation against the chip's dense bf16 peak (target ≥ 40 % on an
  H100); the seed models' base configs (cbramod, luna_base, femba_tiny, lumamba), windows/s.
- Memory against channel count and window length: `bench_memory.py` (`make bench-memory`, also run here).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 - after the thread limits
import torch  # noqa: E402

from eegfm.config import CONFIG_DIR, to_yaml  # noqa: E402
from eegfm.ingest.fixtures import generate_corpus  # noqa: E402
from eegfm.ingest.recipe import load_recipe  # noqa: E402
from eegfm.ingest.run import run_shards  # noqa: E402
from eegfm.models.mae import MaeConfig, ReveMae  # noqa: E402
from eegfm.models.reve import SIZES  # noqa: E402
from eegfm.models.tokenizer import NeuralTokenizer, TokenizerConfig  # noqa: E402
from eegfm.pretrain.callbacks.throughput import peak_flops  # noqa: E402
from eegfm.pretrain.config import load_pretrain_config  # noqa: E402
from eegfm.pretrain.mae import add_masks  # noqa: E402
from eegfm.pretrain.plan import Cursor  # noqa: E402
from eegfm.pretrain.stream import ShardStream  # noqa: E402
from eegfm.pretrain.table import DatasetSpec, ShardTable, load_table  # noqa: E402
from eegfm.storage import read_json  # noqa: E402

BUDGET = 4800


def _shards(work: Path, recipe: str, subjects: int, duration_s: float) -> Path:
    out = work / f"{recipe}-shards"
    generate_corpus(recipe, work / recipe, seed=0, n_subjects=subjects, duration_s=duration_s)
    run_shards(load_recipe(recipe, root=str(work / recipe)), str(out), progress=False)
    return out


def _split(shards: Path) -> str:
    """The fixture dataset's one split (`train` for TUH-like recipes, `pretrain` for BioSemi's)."""
    (split, *_) = read_json(str(shards / "manifest.json"))["totals"]["per_split"]
    return split


def loader(shards: Path, seconds: float, masks: bool, channels: int | None = None) -> dict[str, float]:
    """Windows/s of one process streaming `shards` (its table read once, as a worker would), only the
    windows with `channels` channels if given."""
    from functools import partial

    table = load_table([DatasetSpec(str(shards))], _split(shards))
    if channels is not None:
        keep = table.channels == channels
        table = ShardTable(
            table.shard_urls,
            *(
                column[keep]
                for column in (table.shard, table.offset, table.size, table.channels, table.times, table.crc)
            ),
            shard_bytes=table.shard_bytes,
            dataset_starts=[0, int(keep.sum())],
        )
    transform = partial(add_masks, mae=MaeConfig(), encoder=SIZES["reve_base"]) if masks else None
    stream = ShardStream(
        table,
        [None],
        seed=0,
        budget=BUDGET,
        clip=15.0,
        start=Cursor(),
        rank=0,
        world=1,
        accumulation=1,
        transform=transform,
    )
    batches = iter(stream)
    next(batches)  # warm-up: the epoch plan, file handles
    windows, channels, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = next(batches)
        windows += batch["eeg"].shape[0]
        channels += batch["eeg"].shape[0] * batch["eeg"].shape[1]
    elapsed = time.perf_counter() - started
    return {"windows_per_s": windows / elapsed, "mean_channels": channels / max(windows, 1)}


def _model(kind: str, size: str) -> torch.nn.Module:
    if kind == "mae":
        tiny = size == "reve_tiny"
        mae = MaeConfig(decoder_dim=64, decoder_depth=1, decoder_heads=2) if tiny else MaeConfig()
        return ReveMae(SIZES[size], mae)
    tiny = {"embed_dim": 50, "depth": 2, "heads": 2, "code_dim": 32, "codebook_size": 512, "decoder_depth": 1}
    return NeuralTokenizer(TokenizerConfig(**(tiny if size == "tiny" else {})))


def model_step(kind: str, size: str, device: str, batch: int, channels: int, steps: int) -> dict[str, float]:
    """Timed training steps (forward, backward, AdamW; bf16 autocast on GPU) of an MAE or a tokenizer on
    random 10-s windows of `channels` channels."""
    torch.manual_seed(0)
    model = _model(kind, size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    eeg = torch.randn(batch, channels, 2000, device=device)
    positions = torch.rand(batch, channels, 3, device=device) * 0.2 - 0.1
    generator = torch.Generator().manual_seed(0)
    if kind == "mae":
        mask = add_masks(
            {"eeg": eeg, "positions": positions.cpu()},
            generator,
            mae=model.config,
            encoder=model.encoder.config,
        )["mask"]
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> None:
        with autocast:
            out = model(eeg, positions, generator, mask=mask) if kind == "mae" else model(eeg, positions)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - started) / steps
    n_patches = 11 if kind == "mae" else 10
    result = {"windows_per_s": batch / elapsed, "tokens_per_s": batch * channels * n_patches / elapsed}
    peak = peak_flops(torch.device(device))
    if peak:
        result["mfu"] = model.train_flops(batch, channels, n_patches) / elapsed / peak
    return result


def seed_model_rate(
    config: str, windows: int = 16, channels: int = 21, steps: int = 5, device: str = "cpu"
) -> float:
    """Training windows/s of a seed model's config (cbramod_cpu, luna_base, femba_tiny, …): its objective's
    own loader transform (masks, targets) and training loss, AdamW, on random 10-s windows (FEMBA: its
    data.channels, the others: `channels`); on a GPU in bf16 autocast with fused AdamW."""
    from eegfm.pretrain.train import build_module

    torch.manual_seed(0)
    cfg = load_pretrain_config(CONFIG_DIR / "pretrain" / f"{config}.yaml")
    module = build_module(cfg).to(device).train()
    count = len(cfg.data.channels) or channels
    batch = {
        "eeg": torch.randn(windows, count, 2000).clamp(-15, 15),
        "positions": torch.rand(windows, count, 3) * 0.2 - 0.1,
        "keys": [str(i) for i in range(windows)],
        "epoch": 0,
        "index": 0,
    }
    transform = module.batch_transform()
    batch = transform(batch, torch.Generator().manual_seed(0)) if transform else batch
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device == "cuda")
    module.log_step = lambda values: None  # no trainer attached: nothing to log to
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> None:
        with autocast:
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(1 if device == "cpu" else 3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return windows * steps / (time.perf_counter() - started)


def tokenize_rate(shards: Path, size: str) -> float:
    """`eegfm tokenize`'s windows/s on one core, with a (fresh) tokenizer of `size` saved as a checkpoint."""
    import shutil

    from eegfm.pretrain.tokenize import tokenize_dataset

    work = shards.parent / f"tokenize-{size}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(shards, work / "shards")
    tokenizer = _model("tokenizer", size)
    tokenizer(torch.randn(8, 21, 2000), torch.rand(8, 21, 3) * 0.1)  # k-means initialisation
    hparams = {"tokenizer": asdict(tokenizer.config)}
    # The run config a checkpoint carries (tokenize reads its data.clip); any tokenizer run's will do.
    run = load_pretrain_config(CONFIG_DIR / "pretrain" / "labram_vqnsp_tiny.yaml", ["data.clip=15.0"])
    config = {"SaveRunConfig": {"config": to_yaml(run)}}
    state = {f"model.{k}": v for k, v in tokenizer.state_dict().items()}
    torch.save(
        {"hyper_parameters": hparams, "state_dict": state, "callbacks": config}, work / "tokenizer.ckpt"
    )
    summary = tokenize_dataset(str(work / "tokenizer.ckpt"), str(work / "shards"), progress=False)
    return summary["windows"] / summary["seconds"]


def padding_cost(shards: list[Path], windows_per_batch: int, batches: int = 200) -> dict[str, float]:
    """What padding would cost instead of same-shape micro-batches: batches drawn at random from the
    datasets together, each padded to its widest window (the alternative the issue names)."""
    specs = [DatasetSpec(str(s), split=_split(s)) for s in shards]
    table = load_table(specs, "train")
    rng = np.random.default_rng(0)
    real = padded = attention_real = attention_padded = 0.0
    for _ in range(batches):
        channels = table.channels[rng.integers(len(table), size=windows_per_batch)].astype(np.float64)
        real += channels.sum()
        padded += channels.max() * len(channels)
        attention_real += (channels**2).sum()
        attention_padded += channels.max() ** 2 * len(channels)
    return {"padding_share": 1 - real / padded, "attention_ratio": attention_padded / attention_real}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per loader measurement")
    parser.add_argument("--work", help="folder for the fixture shards (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        print("loader, one process on one core, 4,800 channel-windows per micro-batch:")
        runs = (("tueg", 6, None), ("chbmit", 3, None), ("biosemi", 2, 64), ("biosemi", 2, 128))
        made: dict[str, Path] = {}
        for recipe, subjects, channels in runs:
            if recipe not in made:
                made[recipe] = _shards(work, recipe, subjects, 300.0)
            shards = made[recipe]
            for masks in (False, True):
                r = loader(shards, args.seconds, masks, channels)
                what = "with MAE masks" if masks else "decode+normalise+batch"
                print(
                    f"  {recipe:8s} {r['mean_channels']:5.1f} channels  {what:24s} "
                    f"{r['windows_per_s']:8.0f} windows/s"
                )
        mix = padding_cost([made["tueg"], made["biosemi"]], windows_per_batch=64)
        print(
            f"padding instead (TUEG-like + BioSemi windows, random batches of 64): "
            f"{100 * mix['padding_share']:.0f} % of tokens would be padding, "
            f"attention FLOPs ×{mix['attention_ratio']:.1f}; same-shape micro-batches pad nothing"
        )
        for size in ("tiny", "labram_vqnsp"):
            rate = tokenize_rate(made["tueg"], size)
            print(f"eegfm tokenize, {size} tokenizer, one core, 20-channel windows: {rate:.0f} windows/s")
    for kind, size, what in (
        ("mae", "reve_tiny", "reve_tiny MAE"),
        ("tokenizer", "tiny", "tiny VQ-NSP tokenizer"),
    ):
        cpu = model_step(kind, size, "cpu", 16, 21, 10)
        print(
            f"model, {what} on the CPU (1 thread), 16 × 21-channel windows: "
            f"{cpu['windows_per_s']:.0f} windows/s, {cpu['tokens_per_s']:.0f} tokens/s"
        )
    for config in ("cbramod_cpu", "luna_cpu", "femba_cpu", "lumamba_cpu"):
        rate = seed_model_rate(config)
        print(f"model, {config} on the CPU (1 thread), 16 × 10-s windows: {rate:.1f} windows/s")
    if not torch.cuda.is_available():
        print(
            "GPU: none here; on a GPU machine this prints reve_base and labram_vqnsp bf16 tokens/s and MFU, "
            "and the seed models' base sizes in windows/s"
        )
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name()
    for kind, size, what in (
        ("mae", "reve_base", "reve_base MAE"),
        ("tokenizer", "labram_vqnsp", "labram_vqnsp"),
    ):
        for channels in (21, 64):
            gpu = model_step(kind, size, "cuda", BUDGET // channels, channels, 20)
            mfu = f", MFU {100 * gpu['mfu']:.1f} %" if "mfu" in gpu else ""
            print(
                f"model, {what} bf16 on {name}, {BUDGET // channels} × {channels}-channel windows: "
                f"{gpu['tokens_per_s']:.0f} tokens/s, {gpu['windows_per_s']:.0f} windows/s{mfu}"
            )
    for config in ("cbramod", "luna_base", "femba_tiny", "lumamba"):
        rate = seed_model_rate(config, windows=64, steps=20, device="cuda")
        print(
            f"model, {config} bf16 on {name}, 64 × 10-s windows (21 channels, FEMBA 18): {rate:.0f} windows/s"
        )


if __name__ == "__main__":
    main()
