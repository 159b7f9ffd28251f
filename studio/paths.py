"""Cache folders found from the environment at the call, with ~ and $VARIABLES expanded as huggingface_hub
expands its own.

No MindSpore here: what builds kernels and what composes pipelines both ask.
"""

import os
from pathlib import Path


def expanded(path: str) -> str:
    """`path` with a leading ~ and $VARIABLES expanded (as written when there is no such user or variable)."""
    return os.path.expandvars(os.path.expanduser(path))


def cache_root(sub: str) -> Path:
    """studio's cache folder `sub` ('composed', 'kernels'): $STUDIO_CACHE/sub, else $XDG_CACHE_HOME/studio/sub,
    else ~/.cache/studio/sub."""
    root = os.environ.get("STUDIO_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "studio")
    return Path(expanded(root)) / sub
