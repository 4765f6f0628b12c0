"""Test configuration: strict numerics so that silent broadcasting bugs fail."""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed: each test sees the same data every run."""
    return np.random.default_rng(0)
