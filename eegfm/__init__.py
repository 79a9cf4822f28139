"""eegfm: heterogeneous EEG archives → montage-tagged WebDataset shards → pretrained EEG foundation models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eegfm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
