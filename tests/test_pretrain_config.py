"""Pretraining configs are typed: unknown keys, wrong types and ranges fail naming the key; every field is
documented; secrets read from the environment are never written back."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from conftest import REPO

from eegfm.config import field_docs, to_yaml
from eegfm.errors import ConfigError
from eegfm.pretrain.config import SCHEMAS, load_pretrain_config
from eegfm.pretrain.plan import epoch_counts

PRETRAIN = REPO / "configs" / "pretrain"
TINY = PRETRAIN / "reve_tiny.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_stepz=5", "unknown key trainer.max_stepz; did you mean trainer.max_steps?"),
        ("optim.lrr=1", "unknown key optim.lrr; did you mean optim.lr?"),
        ("trainr.max_steps=5", "unknown key trainr; did you mean trainer?"),
        ("trainer.max_steps=abc", "trainer.max_steps: Value 'abc' of type 'str' could not be converted"),
        ("optim.lr=fast", "optim.lr: Value 'fast'"),
        ("data.channel_budget=0", "data.channel_budget: must be positive, got 0"),
        ("trainer.strategy=horovod", "trainer.strategy: must be one of ddp, fsdp, deepspeed"),
        ("logging.tensorboard=s3://b/tb", "TensorBoard writes to a local folder only"),
        ("model.size=reve_huge", "model.size: 'reve_huge' is not one of"),
        ("mae.mask_ratioo=0.5", "did you mean mae.mask_ratio?"),
    ],
)
def test_bad_keys_and_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        load_pretrain_config(TINY, [override])


def test_every_shipped_config_loads_and_every_field_is_documented() -> None:
    for path in sorted(set(PRETRAIN.glob("*.yaml")) - {PRETRAIN / "base.yaml"}):  # base: no objective
        cfg = load_pretrain_config(path)
        assert type(cfg) is SCHEMAS[cfg.objective]

    def undocumented(cls: type) -> list[str]:
        docs = field_docs(cls)
        missing = [f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls) if f.name not in docs]
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                missing += undocumented(type(default))
        return missing

    for schema in SCHEMAS.values():
        assert undocumented(schema) == [], schema


def test_the_objective_picks_the_schema() -> None:
    with pytest.raises(ConfigError, match="unknown key mae"):  # an MAE section in a tokenizer run
        load_pretrain_config(PRETRAIN / "labram_vqnsp_tiny.yaml", ["mae.mask_ratio=0.5"])
    with pytest.raises(ConfigError, match="objective 'gan' is not one of mae, tokenizer, mcm"):
        load_pretrain_config(TINY, ["objective=gan"])


def test_environment_values_stay_references_in_what_is_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EEGFM_TEST_BUCKET", "secret-bucket-name")
    cfg = load_pretrain_config(
        TINY, ["run.dir=s3://${oc.env:EEGFM_TEST_BUCKET}/run", "logging.tensorboard=false"]
    )
    assert cfg.run.dir == "s3://secret-bucket-name/run"  # resolved for the run
    saved = to_yaml(cfg)
    assert "secret-bucket-name" not in saved and "${oc.env:EEGFM_TEST_BUCKET}" in saved


def test_print_config_shows_the_resolved_typed_config_with_docs(capsys: pytest.CaptureFixture[str]) -> None:
    from eegfm.cli import main

    assert main(["pretrain", "--config", str(TINY), "--print-config", "trainer.max_steps=7"]) == 0
    printed = capsys.readouterr().out
    assert "max_steps: 7  # Optimizer steps of the whole run" in printed
    assert "tensorboard: runs/reve_tiny/tensorboard" in printed  # interpolation resolved
    # A mistyped key, as a process: exit status 2 and one line on stderr.
    bad = subprocess.run(
        [sys.executable, "-m", "eegfm.cli", "pretrain", "--config", str(TINY), "trainer.max_stepz=5"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (
        bad.returncode == 2 and bad.stderr.count("\n") == 1 and "did you mean trainer.max_steps" in bad.stderr
    )


def test_a_real_crash_keeps_its_traceback() -> None:
    """Only the project's own errors become one line: a failure inside Lightning or torch keeps its
    traceback (devices=0 passes our schema, which does not second-guess Lightning's own checks)."""
    done = subprocess.run(
        [sys.executable, "-m", "eegfm.cli", "pretrain", "--config", str(TINY), "trainer.devices=0",
         f"data.shards=[{REPO}/nowhere]"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback (most recent call last)" in done.stderr


def test_a_tiny_weight_is_a_clear_error_not_a_crash() -> None:
    """`weights [1, 1e-4]` used to crash the epoch plan (`need at least one array to concatenate`)."""
    import numpy as np

    with pytest.raises(ConfigError, match=r"data.shards\[1\]: weight 0.0001 .* rounds to none"):
        epoch_counts(np.array([95, 24]), [1, 1e-4])
    assert epoch_counts(np.array([95, 24]), [1, 0.01]).tolist() == [118, 1]
