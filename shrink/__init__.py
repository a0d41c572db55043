"""shrink: turn a fine-tuned transformer classifier into the fastest, smallest model that meets its SLOs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shrink")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
