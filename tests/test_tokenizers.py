"""Stage 1 (VQ-NSP and residual-VQ tokenizers) and stage 2 (masked code modelling) on fixture shards."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import fsspec
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from pretrainrun import (
    ENV,
    assert_killed_run_resumes_exactly,
    fixed_batches,
    keys_by_step,
    losses,
    pretrain_command,
    run,
)
from shardcheck import check_crcs

from eegfm.ingest.contract import index_name
from eegfm.models.mcm import SIZES, MaskedCodeModel, McmConfig, McmOutput, token_mask
from eegfm.models.reve import count_parameters
from eegfm.models.tokenizer import NeuralTokenizer, TokenizerConfig

CONFIGS = REPO / "configs" / "pretrain"
TINY = {"embed_dim": 50, "depth": 2, "heads": 2, "code_dim": 32, "codebook_size": 512, "decoder_depth": 1}


def _rows(metrics: str) -> list[dict[str, str]]:
    with fsspec.open(metrics, "r") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("kind", "codes"), [("vqnsp", 1), ("rvq", 4 * 2)])
def test_tokenization_is_deterministic_and_follows_the_channels(kind: str, codes: int) -> None:
    torch.manual_seed(0)
    # 64 codes for 380 patches: k-means draws distinct vectors (with more codes than patches it repeats
    # some, and equal codes are exact ties).
    tokenizer = NeuralTokenizer(TokenizerConfig(kind=kind, quantizers=2, **{**TINY, "codebook_size": 64}))
    eeg, positions = torch.randn(2, 19, 2000), torch.rand(2, 19, 3) * 0.1
    tokenizer(eeg, positions)  # one training step's forward: the k-means initialisation
    ids = tokenizer.tokenize(eeg, positions)
    assert ids.shape == (2, 19, 10, codes) and ids.max() < 64
    assert torch.equal(ids, tokenizer.tokenize(eeg, positions))
    perm = torch.randperm(19)
    permuted = tokenizer.tokenize(eeg[:, perm], positions[:, perm])
    # The same codes, up to near-ties that the attention's summation order can flip.
    assert (permuted == ids[:, perm]).float().mean() > 0.95


@pytest.mark.parametrize(
    ("size", "millions"), [("labram_base", 5.8), ("labram_large", 46.0), ("labram_huge", 369.0)]
)
def test_masked_code_encoder_sizes(size: str, millions: float) -> None:
    with torch.device("meta"):
        model = MaskedCodeModel(McmConfig(**SIZES[size]))
    assert abs(count_parameters(model.encoder) / 1e6 - millions) / millions < 0.02


def test_token_masks_are_exact_and_differ_per_sample() -> None:
    mask = token_mask(3, 190, 0.5, torch.Generator().manual_seed(0))
    assert (mask.sum(dim=1) == 95).all() and not torch.equal(mask[0], mask[1])


class _SameHalfTwice(MaskedCodeModel):
    """Negative control: a stage 2 whose second pass masks the first pass's half again."""

    def forward(self, eeg, positions, codes, mask):  # type: ignore[override]
        loss, accuracy = self._pass(eeg, positions, codes, mask)
        again, again_accuracy = self._pass(eeg, positions, codes, mask)
        return McmOutput((loss + again) / 2, (accuracy + again_accuracy) / 2)


class _FreshRandomHalf(MaskedCodeModel):
    """Negative control: a second pass on a new random half, not the complement."""

    def forward(self, eeg, positions, codes, mask):  # type: ignore[override]
        other = token_mask(*mask.shape, 0.5, torch.Generator().manual_seed(99))
        loss, accuracy = self._pass(eeg, positions, codes, mask)
        second, second_accuracy = self._pass(eeg, positions, codes, other)
        return McmOutput((loss + second) / 2, (accuracy + second_accuracy) / 2)


def _complement_pass_failures(model: MaskedCodeModel) -> list[str]:
    """How `model`'s forward departs from LaBraM's symmetric pass (the second pass masks exactly the
    complement of the first, and scores the codes there); [] if it does not.

    (a) Its loss is the mean of two cross-entropies computed here from the definition: the encoder with
    `mask` masked, scored at `mask`, and with `~mask` masked, scored at `~mask` (no other mask gives the
    same encoder features). (b) With a head that predicts code 7 everywhere (zero weights, bias on 7), codes
    that are 7 on exactly one half make each pass right on all or none of its targets: accuracy must be
    exactly 1/2 whichever half is right and the loss must be the closed-form mean of a right and a wrong
    cross-entropy, while codes that are never 7 give accuracy 0.
    """
    size, slots = model.config.codebook_size, model.config.codes_per_patch
    generator = torch.Generator().manual_seed(0)
    eeg, positions = (
        torch.randn(2, 19, 2000, generator=generator),
        torch.rand(2, 19, 3, generator=generator) * 0.1,
    )
    codes = torch.randint(8, size, (2, 190, slots), generator=generator)  # never code 7 …
    mask = token_mask(2, 190, 0.5, generator)
    failures = []
    with torch.no_grad():
        out = model(eeg, positions, codes, mask)
        by_definition = []
        for half in (mask, ~mask):
            logits = model.head(model.encoder(eeg, positions, half)[half]).reshape(-1, size)
            by_definition.append(F.cross_entropy(logits, codes[half].reshape(-1)))
        if not torch.allclose(out.loss, sum(by_definition) / 2, rtol=1e-6, atol=0):
            failures.append(f"loss {float(out.loss)} is not the mean over the half and its complement")

        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias.reshape(slots, size)[:, 7] = 10.0
        right = math.log(math.exp(10.0) + size - 1) - 10.0  # cross-entropy of the predicted code
        wrong = math.log(math.exp(10.0) + size - 1)
        if float(model(eeg, positions, codes, mask).accuracy) != 0.0:
            failures.append("a head that is never right scored above 0")
        for name, half in (("first", mask), ("second", ~mask)):
            sevens = torch.where(half[..., None], 7, codes)  # … except on this half
            out = model(eeg, positions, sevens, mask)
            if float(out.accuracy) != 0.5:
                failures.append(f"accuracy {float(out.accuracy)} when only the {name} pass's half is right")
            if not math.isclose(float(out.loss), (right + wrong) / 2, rel_tol=1e-5):
                failures.append(f"loss {float(out.loss)} when only the {name} pass's half is right")
    return failures


def test_the_second_pass_masks_and_scores_exactly_the_complement() -> None:
    """LaBraM's symmetric pass, so every patch is a target once per step; the same checks reject a second
    pass that repeats the first half or masks a fresh random half."""
    config = McmConfig(**SIZES["labram_tiny"], codebook_size=512, codes_per_patch=2)
    torch.manual_seed(0)
    assert _complement_pass_failures(MaskedCodeModel(config)) == []
    for broken in (_SameHalfTwice, _FreshRandomHalf):
        torch.manual_seed(0)
        assert _complement_pass_failures(broken(config)), broken.__name__


def test_params_for_the_stage_2_configs_need_no_tokenizer(capsys: pytest.CaptureFixture[str]) -> None:
    from eegfm.cli import main

    assert main(["params", "--config", str(CONFIGS / "labram_mcm_base.yaml")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "encoder: 5,764,976"


@pytest.fixture(scope="module")
def tokenizer_run(tueg_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 steps of the tiny VQ-NSP tokenizer (512 codes)."""
    base = tmp_path_factory.mktemp("tokenizer")
    run(
        pretrain_command(
            str(CONFIGS / "labram_vqnsp_tiny.yaml"),
            tueg_shards,
            str(base / "run"),
            base / "keys",
            "data.channel_budget=320",
            "trainer.max_steps=100",
        )
    )
    return base


@pytest.mark.slow
def test_tokenizer_learns_and_keeps_its_codebook_alive(tokenizer_run: Path) -> None:
    rows = _rows(str(tokenizer_run / "run" / "metrics.csv"))
    first, last = rows[0], rows[-1]
    reconstruction = [float(r["amplitude_loss"]) + float(r["phase_loss"]) for r in (first, last)]
    assert reconstruction[1] < 0.7 * reconstruction[0], reconstruction
    assert float(last["codebook_usage"]) >= 0.5 and float(last["codebook_perplexity"]) > 50, last


@pytest.mark.slow
def test_residual_vq_tokenizer_trains(tueg_shards: Path, tmp_path: Path) -> None:
    run(
        pretrain_command(
            str(CONFIGS / "neurorvq_tiny.yaml"),
            tueg_shards,
            str(tmp_path / "run"),
            tmp_path / "keys",
            "trainer.max_steps=30",
        )
    )
    rows = _rows(str(tmp_path / "run" / "metrics.csv"))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert {"signal_loss", "codebook_usage_min", "dead_codes"} <= set(rows[0])


# `eegfm pretrain`, recording each rank's codebook digest (hashed here, apart from CodebookHealth's) each time
# CodebookHealth compares the ranks; with UNSYNCED=1, NeuralTokenizer.sync_codebooks does nothing.
_RECORDING_CLI = """
import hashlib, os, sys
from eegfm.models.tokenizer import NeuralTokenizer
from eegfm.pretrain.callbacks import codebook_health

compare = codebook_health.CodebookHealth._check_ranks_agree

def record_then_compare(trainer, books):
    digest = hashlib.sha256(b"".join(b.embed.detach().cpu().numpy().tobytes() for b in books)).hexdigest()
    with open(os.path.join(os.environ["DIGESTS"], f"rank-{trainer.global_rank}.txt"), "a") as f:
        f.write(f"{trainer.global_step} {digest}\\n")
    compare(trainer, books)

codebook_health.CodebookHealth._check_ranks_agree = staticmethod(record_then_compare)
if os.environ.get("UNSYNCED") == "1":
    NeuralTokenizer.sync_codebooks = lambda self: None
from eegfm.cli import main
sys.exit(main())
"""


def _digests(folder: Path) -> dict[int, dict[int, str]]:
    """{rank: {step: codebook digest}} as the recording CLI wrote them."""
    return {
        int(path.stem.split("-")[1]): dict(
            (int(step), digest) for step, digest in (line.split() for line in path.read_text().splitlines())
        )
        for path in sorted(folder.glob("rank-*.txt"))
    }


@pytest.mark.slow
def test_ddp_ranks_hold_bit_identical_codebooks(tueg_shards: Path, tmp_path: Path) -> None:
    """CodebookHealth compares the ranks' codebooks bit for bit after the k-means step and every 5 steps,
    and stops the run on a difference. Synced (`sync_codebooks`), the two ranks' codebooks are equal at
    every check; the same run with the sync disabled (negative control) diverges at the k-means step, and
    CodebookHealth stops it there naming both digests."""
    cli = tmp_path / "recording_cli.py"
    cli.write_text(_RECORDING_CLI)
    outcomes = {}
    for unsynced in ("0", "1"):
        base = tmp_path / f"unsynced-{unsynced}"
        (base / "digests").mkdir(parents=True)
        command = pretrain_command(
            str(CONFIGS / "labram_vqnsp_tiny.yaml"),
            tueg_shards,
            str(base / "run"),
            base / "keys",
            "trainer.devices=2",
            "trainer.max_steps=15",
        )
        env = {**ENV, "DIGESTS": str(base / "digests"), "UNSYNCED": unsynced}
        done = subprocess.run(
            [sys.executable, str(cli), *command[3:]], env=env, capture_output=True, text=True, timeout=600
        )
        outcomes[unsynced] = (done, _digests(base / "digests"), base)

    done, digests, base = outcomes["0"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(digests) == [0, 1] and sorted(digests[0]) == [1, 5, 10, 15], digests
    assert digests[0] == digests[1]
    assert len(set(digests[0].values())) > 1  # the codebooks moved, and stayed equal across ranks
    steps = keys_by_step(base / "keys")
    assert sorted(steps) == [0, 1] and not set(steps[0][3]) & set(steps[1][3])
    assert float(_rows(str(base / "run" / "metrics.csv"))[-1]["codebook_usage"]) > 0

    done, digests, _ = outcomes["1"]
    assert done.returncode != 0, "the unsynced run was not stopped"
    assert sorted(digests) == [0, 1] and sorted(digests[0]) == [1], digests
    assert digests[0][1] != digests[1][1]
    assert "codebooks differ across ranks at step 1" in done.stderr, done.stderr[-3000:]
    assert digests[0][1] in done.stderr and digests[1][1] in done.stderr


@pytest.mark.slow
@pytest.mark.s3
def test_killed_tokenizer_run_on_s3_resumes_exactly(
    s3_env, tueg_shards: Path, tokenizer_run: Path, tmp_path: Path
) -> None:
    fsspec.filesystem("s3").mkdir("tokenizer-runs")
    command = pretrain_command(
        str(CONFIGS / "labram_vqnsp_tiny.yaml"),
        tueg_shards,
        "s3://tokenizer-runs/tiny",
        tmp_path / "keys",
        "data.channel_budget=320",
        "trainer.max_steps=100",
    )
    env = {**ENV, **s3_env.env()}
    run_url = "s3://tokenizer-runs/tiny"
    assert_killed_run_resumes_exactly(command, env, run_url, 40, 100, tmp_path / "keys", tokenizer_run)


@pytest.mark.slow
def test_stage_2_beats_the_majority_code_and_exports(
    tueg_shards: Path, tokenizer_run: Path, tmp_path: Path
) -> None:
    from eegfm.pretrain.export import encoder_from_checkpoint, load_encoder
    from eegfm.pretrain.mcm import McmPretraining

    run(
        pretrain_command(
            str(CONFIGS / "labram_mcm_tiny.yaml"),
            tueg_shards,
            str(tmp_path / "run"),
            tmp_path / "keys",
            f"tokenizer.checkpoint={tokenizer_run / 'run'}",
            "data.channel_budget=320",
            "trainer.max_steps=150",
            "optim.lr=2e-3",
        )
    )
    checkpoint = str(tmp_path / "run" / "checkpoints" / "step=00000150.ckpt")
    module = McmPretraining.load_from_checkpoint(checkpoint, weights_only=True).eval()
    correct, total, codes_seen = 0.0, 0, Counter()
    with torch.no_grad():
        for batch in fixed_batches(tueg_shards, 7, module.batch_transform()):
            codes = module.tokenizer.tokenize(batch["eeg"], batch["positions"]).flatten(1, 2)
            out = module.model(batch["eeg"], batch["positions"], codes, batch["mask"])
            correct += float(out.accuracy) * codes.numel()
            total += codes.numel()
            codes_seen.update(codes.reshape(-1).tolist())
    majority = codes_seen.most_common(1)[0][1] / total  # always guessing the most frequent code
    assert correct / total > majority + 0.02, (correct / total, majority)

    done = run(
        [
            sys.executable,
            "-m",
            "eegfm.cli",
            "export",
            "--checkpoint",
            checkpoint,
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert "step=00000150.ckpt" in done.stdout
    eeg, positions = torch.randn(2, 19, 2000), torch.rand(2, 19, 3) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(
            load_encoder(str(tmp_path / "x")).eval()(eeg, positions),
            encoder_from_checkpoint(checkpoint)(eeg, positions),
        )


@pytest.mark.slow
@pytest.mark.s3
def test_tokenize_writes_resumable_token_shards_that_stage_2_reads(
    s3_env, tueg_shards: Path, tokenizer_run: Path, tmp_path: Path
) -> None:
    import shutil

    from eegfm.pretrain.plan import Cursor
    from eegfm.pretrain.stream import ShardStream
    from eegfm.pretrain.table import DatasetSpec, load_table
    from eegfm.pretrain.tokenize import tokenizer_id
    from eegfm.pretrain.tokenizer import load_tokenizer

    shards = tmp_path / "shards"
    shutil.copytree(tueg_shards, shards)
    command = [
        sys.executable, "-m", "eegfm.cli", "tokenize", "--checkpoint", str(tokenizer_run / "run"),
        "--shards", str(shards), "--no-progress",
    ]  # fmt: skip
    run(command)
    tokenizer = load_tokenizer(str(tokenizer_run / "run" / "checkpoints" / "step=00000100.ckpt"))
    identity = tokenizer_id(tokenizer)
    written = {p.name: p.read_bytes() for p in shards.glob(f"*.tokens-{identity}.*")}
    assert len(written) == 2 * 15  # a token shard and its index per shard
    for token_shard in shards.glob(f"*.tokens-{identity}.tar"):  # each window's crc32 matches its bytes
        check_crcs(token_shard, json.loads(token_shard.with_name(index_name(token_shard.name)).read_text()))

    # Killed mid-way: the last shard's index was never written. A re-run redoes that shard alone.
    last = sorted(shards.glob(f"*.tokens-{identity}.index.json"))[-1]
    last.unlink()
    rerun = run(command).stdout
    assert " in 1 shards tokenized" in rerun and "14 shards were done already" in rerun, rerun
    assert {p.name: p.read_bytes() for p in shards.glob(f"*.tokens-{identity}.*")} == written

    # The stored ids are the tokenizer's ids of the same windows.
    table = load_table([DatasetSpec(str(shards))], "train", tokens=identity)
    batch = next(
        iter(
            ShardStream(
                table, [None], seed=0, budget=320, clip=15.0, start=Cursor(), rank=0, world=1, accumulation=1
            )
        )
    )
    assert torch.equal(batch["codes"], tokenizer.tokenize(batch["eeg"], batch["positions"]))

    # From S3, token shards come through the node cache like the shards: the same epoch, one GET each.
    fs = fsspec.filesystem("s3")
    fs.mkdir("tokens")
    fs.put(str(shards), "tokens/tueg", recursive=True)
    remote = load_table([DatasetSpec("s3://tokens/tueg")], "train", tokens=identity)
    options = dict(seed=0, budget=320, clip=15.0, rank=0, world=1, accumulation=1)
    before = s3_env.settled_counts("tokens")

    def epoch_codes(stream: ShardStream) -> list[torch.Tensor]:
        codes = []
        for batch in stream:
            if batch["epoch"]:
                return codes
            codes.append(batch["codes"])
        raise AssertionError("the stream ended")

    local_epoch = epoch_codes(ShardStream(table, [None], start=Cursor(), **options))
    remote_epoch = epoch_codes(
        ShardStream(remote, [None], start=Cursor(), cache_dir=str(tmp_path / "cache"), **options)
    )
    assert len(remote_epoch) == len(local_epoch) and all(map(torch.equal, remote_epoch, local_epoch))
    assert len(list((tmp_path / "cache").glob("*.shard"))) == 2 * 15
    assert s3_env.wait_for_requests(before, {"GET": 2 * 15}, bucket="tokens") == {"GET": 2 * 15}

    # Stage 2 on stored ids trains exactly as stage 2 tokenizing on the fly.
    curves = []
    for precomputed in ("false", "true"):
        run(
            pretrain_command(
                str(CONFIGS / "labram_mcm_tiny.yaml"),
                shards,
                str(tmp_path / precomputed),
                tmp_path / "keys",
                f"tokenizer.checkpoint={tokenizer_run / 'run'}",
                f"tokenizer.precomputed={precomputed}",
                "trainer.max_steps=10",
            )
        )
        curves.append(losses(str(tmp_path / precomputed / "metrics.csv")))
    assert curves[0] == curves[1] and len(curves[0]) == 2
