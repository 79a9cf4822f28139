"""`make bench-eval`: what the in-loop probe costs — embedding windows/s, and its share of a run's time.

- Embedding on the CPU (one thread): `reve_tiny` and `reve_base`, frozen, mean-pooled last layer, batches
  of 64 21-channel 10-s windows (the probe's batches); on a GPU (when there is one) `reve_base` in bf16.
- Reading: labelled windows/s of `labelled_batches` (ranged reads, CRC, decode, z-score) on one core,
  from synthetic task shards.
- Fitting: `fit_and_score` (logistic regression, C over 7 values, and a k-NN) on 2,048 × 512 features
  (reve_base's width) split 1,024/512/512, classes separated as weakly as a real task's.
- The share of a `reve_base` run with a probe of 2,048 windows every 1,000 steps (target ≤ 2 %):
  probe = 2,048/read + 2,048/embed + fit (the encoder's fit only: the fixed baselines are fit once per
  process, and `eval.probe_shuffles` is 0 by default), step = 228 windows (4,800 channel-windows of 21
  channels) / training windows/s, share = probe / (1,000 · step + probe). Reading and embedding are
  shared by the W ranks; the fit runs once on rank 0 while the others wait, so it is not divided.
  On the CPU every rate is measured here. Without a GPU, the GPU figure is projected: the step from the
  MAE's model FLOPs at the project's MFU target (40 % of an H100's 989 TFLOP/s bf16), the embedding from
  the ratio of training to embedding time per window measured here on the CPU (both compute-bound), the
  reading and the fit as measured here (they run on the CPU there too). With a GPU, both are measured.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 - after the thread limits
import torch  # noqa: E402

from eegfm.models.features import embed_batch  # noqa: E402
from eegfm.models.mae import MaeConfig, ReveMae  # noqa: E402
from eegfm.models.reve import SIZES, ReveEncoder  # noqa: E402
from eegfm.pretrain.bench import BUDGET, model_step  # noqa: E402
from eegfm.pretrain.probe import fit_and_score  # noqa: E402

CHANNELS = 21
PROBE_WINDOWS = 2048
EVERY_N_STEPS = 1000
MFU_TARGET = 0.40
H100_BF16 = 989e12


def embed_rate(size: str, device: str, batch: int, repeats: int) -> float:
    """Windows/s of the frozen encoder's mean-pooled features (bf16 autocast on a GPU)."""
    torch.manual_seed(0)
    encoder = ReveEncoder(SIZES[size]).to(device).eval()
    eeg = torch.randn(batch, CHANNELS, 2000, device=device)
    positions = torch.rand(batch, CHANNELS, 3, device=device) * 0.2 - 0.1
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def once() -> None:
        with autocast:
            embed_batch(encoder, eeg, positions, pooling="mean", layers="last")

    once()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - started)


def read_rate(work: Path) -> float:
    """Labelled windows/s of `labelled_batches` over synthetic task shards, one core."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from taskshards import write_task_shards  # the tests' synthetic task writer

    from eegfm.pretrain.taskshards import labelled_batches, read_task_info

    shards = write_task_shards(
        work / "task", subjects={"train": 16, "val": 0, "test": 0}, windows_per_class=8
    )
    task = read_task_info(str(shards))
    started, windows = time.perf_counter(), 0
    for batch in labelled_batches(str(shards), "train", task, clip=15.0, batch_windows=64):
        windows += len(batch.labels)
    return windows / (time.perf_counter() - started)


def fit_seconds(dim: int = 512) -> float:
    """Seconds of one `fit_and_score` on 2,048 windows' features (1,024/512/512), two overlapping classes."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        features = rng.standard_normal((n, dim)) + 0.15 * labels[:, None] * rng.standard_normal(dim)
        return features, labels

    train, val, test = split(1024), split(512), split(512)
    started = time.perf_counter()
    with warnings.catch_warnings():  # scikit-learn's convergence notes on random features: not the point
        warnings.simplefilter("ignore")
        fit_and_score(train, val, test, 2)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", help="folder for the synthetic task shards (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tiny = embed_rate("reve_tiny", "cpu", 64, 5)
    print(
        f"embedding, reve_tiny on the CPU (1 thread), 64 × {CHANNELS}-channel windows: {tiny:.0f} windows/s"
    )
    base_embed = embed_rate("reve_base", "cpu", 8, 2)
    print(
        f"embedding, reve_base on the CPU (1 thread), 8 × {CHANNELS}-channel windows: "
        f"{base_embed:.1f} windows/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        read = read_rate(Path(args.work or tmp))
    print(f"reading labelled windows (ranged reads, CRC, decode, z-score), one core: {read:.0f} windows/s")
    fit = fit_seconds()
    print(f"probe fit (logistic regression over 7 C + k-NN over 5 k), 2,048 × 512 features: {fit:.2f} s")
    train = model_step("mae", "reve_base", "cpu", 4, CHANNELS, 2)["windows_per_s"]
    print(
        f"training, reve_base MAE on the CPU (1 thread), 4 × {CHANNELS}-channel windows: "
        f"{train:.2f} windows/s"
    )

    step_windows = BUDGET // CHANNELS

    def share(step_s: float, embed_s_per_window: float, ranks: int) -> tuple[float, float]:
        probe_s = PROBE_WINDOWS * (1 / read + embed_s_per_window) / ranks + fit
        return probe_s, probe_s / (EVERY_N_STEPS * step_s + probe_s)

    cpu_step = step_windows / train
    probe_s, cpu_share = share(cpu_step, 1 / base_embed, 1)
    print(
        f"share on this CPU, one process: probe {probe_s:.0f} s every {EVERY_N_STEPS} steps of "
        f"{cpu_step:.0f} s ({step_windows} windows each): {100 * cpu_share:.2f} %"
    )
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name()
        gpu_embed = embed_rate("reve_base", "cuda", 64, 20)
        gpu_train = model_step("mae", "reve_base", "cuda", step_windows, CHANNELS, 20)["windows_per_s"]
        print(
            f"embedding, reve_base bf16 on {name}, 64 × {CHANNELS}-channel windows: {gpu_embed:.0f} windows/s"
        )
        gpu_step, per_window, how = step_windows / gpu_train, 1 / gpu_embed, f"measured on {name}"
    else:
        print("GPU: none here; on a GPU machine this measures reve_base bf16 embedding and training")
        model = ReveMae(SIZES["reve_base"], MaeConfig())
        gpu_step = model.train_flops(step_windows, CHANNELS, 11) / (MFU_TARGET * H100_BF16)
        per_window = gpu_step / step_windows * train / base_embed
        how = (
            f"projected: step from model FLOPs at {MFU_TARGET:.0%} MFU of an H100, embedding by the CPU ratio"
        )
    for ranks in (1, 8, 32):
        probe_s, gpu_share = share(gpu_step, per_window, ranks)
        print(
            f"share on GPUs ({how}), {ranks} rank(s): probe {probe_s:.1f} s every {EVERY_N_STEPS} steps of "
            f"{1000 * gpu_step:.0f} ms: {100 * gpu_share:.2f} %"
        )


if __name__ == "__main__":
    main()
