"""Helpers shared by the tests."""

import os

import numpy as np


def rel_l2(actual, expected) -> float:
    """||actual - expected|| / ||expected||, in float64."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30))


def cache_environment(monkeypatch, home, variables: dict):
    """Work in a new, empty folder `home`/work, with $HOME = `home`, $CACHES = `home`/caches, and of
    $STUDIO_CACHE and $XDG_CACHE_HOME only what `variables` sets; returns the working folder."""
    work = home / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CACHES", str(home / "caches"))
    for name in ("STUDIO_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return work


class Fspath(os.PathLike):
    """An os.PathLike that is no pathlib.Path: str() of it is its repr, not the path."""

    def __init__(self, path):
        self.path = str(path)

    def __fspath__(self):
        return self.path
