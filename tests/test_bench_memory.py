"""The memory benchmark's measure (`make bench-memory`): the bytes autograd saves for backward, counted
against hand-computed sizes, and a step of each compared objective measured at two sizes."""

from __future__ import annotations

import torch

from eegfm.pretrain.bench_memory import BY_CHANNELS, BY_LENGTH, saved_activation_bytes, step_memory


def test_saved_bytes_are_the_inputs_backward_needs_each_storage_once_without_weights() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(16, 8, requires_grad=True)  # its gradient needs the weight: Linear saves it

    def step() -> torch.Tensor:
        hidden = torch.relu(layer(x))  # Linear saves x (for W's gradient); relu saves its output
        return (hidden * hidden.view(-1).view(16, 4)).sum()  # the product saves both factors: one storage

    # x: 16 × 8 float32 = 512 B; relu's output: 16 × 4 float32 = 256 B (saved by relu and twice by the
    # product, as views of one storage). The weight (4 × 8) is saved too, but it is a parameter.
    assert saved_activation_bytes(step, list(layer.parameters())) == 512 + 256
    # Negative control: without leaving the parameters out, the weight's 128 B are counted.
    assert saved_activation_bytes(step, []) == 512 + 256 + 128


def test_every_compared_objective_runs_its_training_step_and_grows_with_its_input() -> None:
    """Each config's own transform and training step at two sizes; more channels or a longer window
    keeps more for backward (FEMBA's montage is fixed: its channels stay 18)."""
    for config in BY_CHANNELS:
        small, large = (step_memory(config, n, 4.0) for n in (8, 16))
        assert large["channels"] == 16 and large["saved_mib"] > small["saved_mib"] > 0, config
    for config in sorted(set(BY_LENGTH) - set(BY_CHANNELS)):  # the Mamba-only ones: FEMBA
        short, long = (step_memory(config, 8, s) for s in (4.0, 8.0))
        assert short["channels"] == 18 and long["saved_mib"] > short["saved_mib"] > 0, config
