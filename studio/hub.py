"""Model names: a local pipeline folder, or a Hugging Face hub id ('owner/name', 'owner/name@revision').

No MindSpore here: the layout loader and the batch check names before anything is loaded.
"""

import os
from pathlib import Path


class HubId(str):
    """A name a layout decided is a hub id (no folder of that name beside the layout): resolved on the hub even
    where the working folder holds a folder of that name, so that the layout means one model wherever it is
    rendered. A str (equal to, hashed and written as its text); str() of it stays a HubId, so that code that
    normalises a model name with str() keeps the decision."""

    __slots__ = ()

    def __str__(self) -> "HubId":
        return self


def is_hub_id(name: str, base: Path | None = None) -> bool:
    """Whether `name` can only be a hub id: 'owner/name' (one '/', no backslash, not starting with '.', '/' or
    '~'), optionally '@revision', naming no existing path, relative to `base` when given, else to the working
    folder (a broken or looping symbolic link exists: it is a path, not an id); a `HubId` names no path."""
    repo = split_revision(name)[0]
    if repo.count("/") != 1 or "\\" in repo or repo.startswith((".", "/", "~")):
        return False
    return isinstance(name, HubId) or not os.path.lexists((base or Path()) / name)


def split_revision(name: str) -> tuple[str, str | None]:
    """'owner/name@revision' -> ('owner/name', 'revision'): a branch, tag or commit hash ('refs/pr/1' too); a
    repository name has no '@'. Anything else -> (name, None)."""
    repo, at, revision = str(name).partition("@")
    return (repo, revision) if at and revision and repo.count("/") == 1 else (str(name), None)
