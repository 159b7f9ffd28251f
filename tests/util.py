"""Helpers shared by the tests."""

import numpy as np


def rel_l2(actual, expected) -> float:
    """||actual - expected|| / ||expected||, in float64."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30))
