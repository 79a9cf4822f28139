"""The golden loss curve: reve_tiny's first 25 steps on CPU match the recorded curve to rtol 1e-4, so a
change that moves training (model, loss, masks, data order, schedule) is noticed even when it still
"learns"."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from golden import GOLDEN, REGENERATE, REPO, STEPS, golden_curve, read_curve

RTOL = 1e-4  # bit-exact run to run on one machine (measured); headroom for other CPUs' last digits


def curve_differences(curve: dict[int, float], golden: dict[int, float], rtol: float = RTOL) -> list[str]:
    """Where `curve` departs from `golden`: missing or extra steps, losses beyond `rtol`."""
    differences = []
    if sorted(curve) != sorted(golden):
        differences.append(f"steps {sorted(curve)} instead of {sorted(golden)}")
    for step in sorted(set(curve) & set(golden)):
        if not math.isclose(curve[step], golden[step], rel_tol=rtol, abs_tol=0.0):
            differences.append(f"step {step}: loss {curve[step]!r}, golden {golden[step]!r}")
    return differences


@pytest.mark.slow
def test_the_loss_curve_matches_the_golden_curve(tmp_path: Path) -> None:
    golden = read_curve(GOLDEN)
    assert sorted(golden) == list(range(STEPS)), f"{GOLDEN} should hold steps 0–{STEPS - 1}"
    differences = curve_differences(golden_curve(tmp_path), golden)
    assert not differences, (
        f"reve_tiny's CPU loss curve moved from {GOLDEN.relative_to(REPO)} (rtol {RTOL}):\n  "
        + "\n  ".join(differences[:10])
        + f"\nIf the change is meant to move training, regenerate it with `{REGENERATE}` and commit it "
        "saying why; only ever on purpose, never to make this test pass."
    )


def test_the_comparison_catches_a_small_drift() -> None:
    """Negative control of the comparison: a relative drift of 1e-3 at one step, a missing step and an
    extra one are each reported; the recorded curve against itself is not."""
    golden = read_curve(GOLDEN)
    assert curve_differences(golden, golden) == []
    drifted = {**golden, 7: golden[7] * (1 + 1e-3)}
    assert curve_differences(drifted, golden) == [f"step 7: loss {drifted[7]!r}, golden {golden[7]!r}"]
    assert curve_differences({k: v for k, v in golden.items() if k != 3}, golden)
    assert curve_differences({**golden, STEPS: 1.0}, golden)
