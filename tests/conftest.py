"""Shared fixtures: tiny random pipelines written once per test session."""

import importlib.util
import os

import pytest

# what the parity and schema tests compare against: the dev extra (pyproject.toml)
REFERENCE = ("torch", "diffusers", "transformers", "jsonschema")


def pytest_sessionstart(session):
    """The parity tests skip a test whose reference is missing (`pytest.importorskip`), so a run without the dev
    extra would pass with them left out: refuse to start instead, unless asked to skip them."""
    missing = [name for name in REFERENCE if importlib.util.find_spec(name) is None]
    if missing and not os.environ.get("STUDIO_SKIP_REFERENCE"):
        raise pytest.UsageError(f"the parity tests need {', '.join(missing)}: pip install -e '.[dev]' (or set "
                                f"STUDIO_SKIP_REFERENCE=1 to run without them, skipping those tests)")


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
