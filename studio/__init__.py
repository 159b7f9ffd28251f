"""studio: high-resolution posters and wallpapers with PixArt-Sigma on MindSpore."""

__version__ = "0.1.0"
