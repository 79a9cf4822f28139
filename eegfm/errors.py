"""The project's own errors: bad input, configuration or storage that a user can fix.

Every `EegfmError` message names the file, key or endpoint and what to do; the command line prints it as
one line (`eegfm <verb>: error: …`) and exits 2. Anything else (a bug, a torch or NCCL failure) is not an
`EegfmError` and keeps its traceback.
"""

from __future__ import annotations


class EegfmError(Exception):
    """Input, configuration or environment a user can fix; the message says where and what to do."""


class ConfigError(EegfmError, ValueError):
    """A configuration key that is unknown, of the wrong type or out of range."""


class StorageError(EegfmError, OSError):
    """Storage that cannot be reached or written: endpoint, credentials, permissions, space."""


class DataError(EegfmError, ValueError):
    """Shards, indexes or samples that are missing, corrupt or do not match what a run expects."""
