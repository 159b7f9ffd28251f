"""Model names: a local pipeline folder, or a Hugging Face hub id ('owner/name').

No MindSpore here: the layout loader and the batch check names before anything is loaded.
"""

import os
from pathlib import Path


def is_hub_id(name: str, base: Path | None = None) -> bool:
    """Whether `name` can only be a hub id: 'owner/name' (one '/', no backslash, not starting with '.', '/' or
    '~') naming no existing path, relative to `base` when given, else to the working folder (a broken or looping
    symbolic link exists: it is a path, not an id)."""
    if name.count("/") != 1 or "\\" in name or name.startswith((".", "/", "~")):
        return False
    return not os.path.lexists((base or Path()) / name)
