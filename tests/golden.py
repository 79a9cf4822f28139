"""The golden loss curve: `reve_tiny` pretrained on CPU through the real `eegfm pretrain`, on a fixture
corpus built here, 25 steps, every step's loss logged.

`tests/test_golden.py` compares a fresh run with `tests/assets/losses/reve_tiny_cpu.txt`; `make golden`
(`python tests/golden.py --write`) rewrites that file from the same function. Rewrite it only on purpose,
when a change is meant to move the curve (a new model, loss or data path), never to make the test pass.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pretrainrun import losses, pretrain_command, run

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "assets" / "losses" / "reve_tiny_cpu.txt"
CONFIG = REPO / "configs" / "pretrain" / "reve_tiny.yaml"
STEPS = 25
REGENERATE = "make golden"


def golden_curve(workdir: Path) -> dict[int, float]:
    """{step: loss} of the golden run, with its corpus, shards and run directory under `workdir`.

    Single-threaded (pretrainrun.ENV sets OMP_NUM_THREADS=1), one loader worker, fixed seeds: the same
    bits on one machine; other CPUs or BLAS builds may differ in the last digits.
    """
    from eegfm.ingest.fixtures import generate_corpus
    from eegfm.ingest.recipe import load_recipe
    from eegfm.ingest.run import run_shards

    corpus, shards = workdir / "corpus", workdir / "shards"
    generate_corpus("tueg", corpus, seed=0, n_subjects=2, duration_s=60.0)
    run_shards(load_recipe("tueg", root=str(corpus)), str(shards), shard_bytes=512 * 1024, progress=False)
    run(
        pretrain_command(
            str(CONFIG),
            shards,
            str(workdir / "run"),
            workdir / "keys",
            f"trainer.max_steps={STEPS}",
            "trainer.log_every=1",
            "trainer.seed=0",
            "data.seed=0",
            "data.num_workers=1",
            f"checkpoint.every_n_steps={STEPS}",
        )
    )
    return losses(str(workdir / "run" / "metrics.csv"))


def read_curve(path: Path) -> dict[int, float]:
    """`step loss` per line."""
    return {int(step): float(loss) for step, loss in (line.split() for line in path.read_text().splitlines())}


def write_curve(curve: dict[int, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{step} {loss!r}\n" for step, loss in sorted(curve.items())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {GOLDEN.relative_to(REPO)}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eegfm-golden-") as workdir:
        curve = golden_curve(Path(workdir))
    if args.write:
        write_curve(curve, GOLDEN)
        print(
            f"wrote {len(curve)} steps to {GOLDEN.relative_to(REPO)}; commit it, saying why the curve moved"
        )
    else:
        sys.stdout.write("".join(f"{step} {loss!r}\n" for step, loss in sorted(curve.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
