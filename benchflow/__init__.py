"""benchflow: benchmark AI-infrastructure services and compare them honestly."""

from importlib import metadata

try:
    __version__ = metadata.version("benchflow")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
