"""Shared fixtures: tiny random pipelines written once per test session."""

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny PixArt-Sigma pipeline (256 px bins) in the published layout, written by `studio make-tiny`."""
    from studio.tiny import make_tiny
    return make_tiny(tmp_path_factory.mktemp("tiny") / "pixart", sample_size=32)
