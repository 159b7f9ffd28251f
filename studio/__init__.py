"""studio: high-resolution posters and wallpapers with PixArt-Sigma on MindSpore.

`from studio import PixArtSigmaPipeline` works as `from diffusers import PixArtSigmaPipeline` does; it is
imported on first use, so that `import studio` (the CLI's start, planning, proofs) doesn't load MindSpore.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "PixArtSigmaPipeline":
        from studio.pipeline import PixArtSigmaPipeline
        return PixArtSigmaPipeline
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
