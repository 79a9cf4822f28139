"""Errors of the launchers beyond configuration (which is `ConfigError`)."""

from __future__ import annotations

from eegfm.errors import EegfmError


class SubmitError(EegfmError):
    """The scheduler's client (sbatch, kubectl) is missing or refused the job; the message carries its
    stderr, which says why (partition, account, limits, RBAC …)."""
