"""Test configuration: strict numerics so that silent broadcasting bugs fail."""

import pathlib

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed: each test sees the same data every run."""
    return np.random.default_rng(0)


MNIST_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def mnist_slices(n_train: int, n_test: int, data_dir=MNIST_DIR):
    """The first ``n_train`` training and ``n_test`` test images of MNIST, as
    ``(train Split, test Split)``; skips the test when the data is absent."""
    from convjax import data
    if not pathlib.Path(data_dir).is_dir():
        pytest.skip(f"no MNIST at {data_dir}")
    train = data.load("mnist", "train", data_dir=data_dir)
    test = data.load("mnist", "test", data_dir=data_dir)
    return (data.Split(train.images[:n_train], train.labels[:n_train]),
            data.Split(test.images[:n_test], test.labels[:n_test]))
