"""Mamba (Gu & Dao 2023, selective state spaces) in plain PyTorch; mamba-ssm's CUDA kernel when present.

FEMBA and LuMamba are built from mamba-ssm's `Mamba` block (v1: a diagonal, input-dependent SSM per
channel). The CUDA package does not exist on CPU machines (and is not installed here), so the block is
written out in torch and the selective scan — the only part mamba-ssm replaces with a kernel — has three
interchangeable implementations with one signature (mamba-ssm's `selective_scan_fn`):

- `selective_scan_reference`: the recurrence step by step, h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,
  y_t = C_t·h_t + D u_t, times SiLU(z_t). Slow and obviously right: what the tests compare against.
- `selective_scan`: the same recurrence as a chunked parallel prefix scan. Within a chunk of `chunk_size`
  steps the pairs (decay, drive) are combined with the associative operator
  (a₁, b₁)∘(a₂, b₂) = (a₁a₂, a₂b₁ + b₂) in ⌈log₂ chunk⌉ doubling rounds (Hillis–Steele); the state is carried
  from chunk to chunk. Only products of decays in (0, 1] appear (no division by cumulative decays), so it
  is as stable as the recurrence, and the chunk bounds the log-factor of extra memory autograd keeps.
- mamba-ssm's `selective_scan_fn`, used automatically for CUDA tensors when `mamba_ssm` imports.

`Mamba` keeps mamba-ssm's parameter names and shapes (`in_proj`, `conv1d`, `x_proj`, `dt_proj`, `A_log`,
`D`, `out_proj`), so a state dict moves between the two unchanged. `BiMamba` is FEMBA's bidirectional
wrapper (BioFoundation `MambaWrapper`, same names `mamba_fwd`/`mamba_rev`): out = fwd(x) ⊕ flip(rev(flip(x)))
along the sequence, ⊕ = + ("add", the published setting) or × ("multiply").
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.errors import ConfigError

try:  # the CUDA kernels; absent on CPU-only installs
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _kernel_scan
except ImportError:  # pragma: no cover - depends on the machine
    _kernel_scan = None

KERNEL_AVAILABLE = _kernel_scan is not None


def _prepare(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _finish(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One step at a time. u, delta, z: (batch, d, L); A: (d, n); B, C: (batch, n, L); D: (d,).
    Returns y (batch, d, L) [and the last state (batch, d, n)]."""
    delta = _prepare(delta, delta_bias, delta_softplus)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    outputs = []
    for t in range(u.shape[-1]):
        decay = torch.exp(delta[:, :, t, None] * A)  # (batch, d, n)
        state = decay * state + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        outputs.append((state * C[:, None, :, t]).sum(-1))
    y = _finish(torch.stack(outputs, dim=-1), u, D, z)
    return (y, state) if return_last_state else y


def _inclusive_scan(decay: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """States h_t = decay_t h_{t-1} + drive_t (h_{-1} = 0) along dim 2 by recursive doubling."""
    length, offset = decay.shape[2], 1
    while offset < length:
        drive = torch.cat(
            [drive[:, :, :offset], decay[:, :, offset:] * drive[:, :, :-offset] + drive[:, :, offset:]], 2
        )
        decay = torch.cat([decay[:, :, :offset], decay[:, :, offset:] * decay[:, :, :-offset]], 2)
        offset *= 2
    return drive


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int = 64,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The reference's result by a chunked parallel scan (same arguments; see the module docstring)."""
    delta = _prepare(delta, delta_bias, delta_softplus)
    decay = torch.exp(delta[..., None] * A[:, None, :])  # (batch, d, L, n)
    drive = (delta * u)[..., None] * B.transpose(1, 2)[:, None]  # (batch, d, L, n)
    readout = C.transpose(1, 2)[:, None]  # (batch, 1, L, n)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    outputs = []
    for start in range(0, u.shape[-1], chunk_size):
        stop = start + chunk_size
        chunk_decay, chunk_drive = decay[:, :, start:stop], drive[:, :, start:stop]
        first = chunk_decay[:, :, :1] * state[:, :, None] + chunk_drive[:, :, :1]  # carried state enters
        states = _inclusive_scan(chunk_decay, torch.cat([first, chunk_drive[:, :, 1:]], dim=2))
        state = states[:, :, -1]
        outputs.append((states * readout[:, :, start:stop]).sum(-1))
    y = _finish(torch.cat(outputs, dim=-1), u, D, z)
    return (y, state) if return_last_state else y


def scan(*args, use_kernel: bool | None = None, **kwargs) -> torch.Tensor:
    """mamba-ssm's CUDA kernel for CUDA tensors when installed (`use_kernel=None`), else `selective_scan`.
    `use_kernel=True` without the kernel is an error rather than a silent slow path."""
    u = args[0] if args else kwargs["u"]
    if use_kernel is None:
        use_kernel = KERNEL_AVAILABLE and u.is_cuda
    if use_kernel:
        if _kernel_scan is None:
            raise ConfigError("use_kernel=True but mamba_ssm's CUDA selective scan could not be imported")
        return _kernel_scan(*args, **kwargs)
    return selective_scan(*args, **kwargs)


class Mamba(nn.Module):
    """mamba-ssm's `Mamba` block (v1) on (batch, L, d_model): in_proj → causal depth-wise conv → SiLU →
    input-dependent (Δ, B, C) → selective scan, gated by SiLU(z) → out_proj. Same parameters and init
    scheme as mamba-ssm: Δ's bias is softplus⁻¹ of a log-uniform draw in [dt_min, dt_max], A = −(1..n)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.use_kernel: bool | None = None  # None: the CUDA kernel when available and on CUDA
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1)
        )
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        with torch.no_grad():
            bound = self.dt_rank**-0.5
            self.dt_proj.weight.uniform_(-bound, bound)
            dt = torch.exp(
                torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            )
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[1]
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (batch, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :length])
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.T).transpose(1, 2)  # bias goes in through delta_bias
        y = scan(
            x,
            delta,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            use_kernel=self.use_kernel,
        )
        return self.out_proj(y.transpose(1, 2))


class BiMamba(nn.Module):
    """Two Mamba blocks, one reading the sequence forwards and one backwards; their outputs (the backward
    one flipped back into forward order) are added ("add") or multiplied ("multiply")."""

    def __init__(self, d_model: int, strategy: Literal["add", "multiply"] = "add", **mamba_kwargs):
        super().__init__()
        if strategy not in ("add", "multiply"):
            raise ConfigError(f"bidirectional strategy must be 'add' or 'multiply', got {strategy!r}")
        self.strategy = strategy
        self.mamba_fwd = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev = Mamba(d_model, **mamba_kwargs)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        forwards = self.mamba_fwd(hidden)
        backwards = self.mamba_rev(hidden.flip(1)).flip(1)
        return forwards + backwards if self.strategy == "add" else forwards * backwards


def run_stack(x: torch.Tensor, blocks: nn.ModuleList, norms: nn.ModuleList, norm_first: bool) -> torch.Tensor:
    """Residual bidirectional blocks with a LayerNorm each: FEMBA's post-norm order (norm(x + f(x))) or
    LuMamba's pre-norm order (x + f(norm(x))). Kept as two lists to keep the authors' state-dict names
    (`mamba_blocks.i`, `norm_layers.i`)."""
    for block, norm in zip(blocks, norms, strict=True):
        x = x + block(norm(x)) if norm_first else norm(x + block(x))
    return x


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
