"""Shared fixtures: tiny random pipelines written once per test session."""

import pytest


@pytest.fixture(autouse=True)
def hub_names_resolve(monkeypatch):
    """Tests stand in for the hub by patching huggingface_hub's functions; the check that the hub's host name
    resolves (checkpoint._hub_unreachable) would look at the test machine's network instead."""
    from studio import checkpoint
    monkeypatch.setattr(checkpoint, "_hub_unreachable", lambda: None)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny PixArt-Sigma pipeline (256 px bins) in the published layout, written by `studio make-tiny`."""
    from studio.tiny import make_tiny
    return make_tiny(tmp_path_factory.mktemp("tiny") / "pixart", sample_size=32)
