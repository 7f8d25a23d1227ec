"""The imagekit marketplace: a registry of signed appliance metadata (StratusLab routes)."""

from imagekit import __version__

__all__ = ["__version__"]
