"""convjax.probe against cases with known answers: rank-r activations (variance fraction
and R^2 of 1 at r, also after a random rotation), a hand-computed covariance, separable
and random labels for the probe."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax import layers as Lyr
from convjax import probe as P


def _rotation(rng, c):
    q, _ = np.linalg.qr(rng.normal(size=(c, c)))
    return q


@pytest.mark.parametrize("rotate", [False, True])
def test_rank_r_activations_are_kept_whole_at_r(rng, rotate):
    m, c, r = 4000, 32, 8
    z = rng.normal(size=(m, r)) * np.linspace(3, 1, r)  # r latent factors
    a = rng.normal(size=(r, c))
    x = z @ a + 5.0  # rank r in 32 dimensions, off-centre (post-ReLU maps are)
    if rotate:  # the same activations in another basis of the 32 channels
        q = _rotation(rng, c)
        x, a = x @ q, a @ q
    frac = P.pca_fractions(x)
    assert frac.shape == (c,)
    np.testing.assert_allclose(frac[r - 1:], 1.0, atol=1e-10)
    assert frac[r - 2] < 0.99
    # the span of the true directions holds everything; a random r-subspace does not
    assert P.subspace_fraction(x, a.T) == pytest.approx(1.0, abs=1e-10)
    assert P.subspace_fraction(x, a.T @ rng.normal(size=(r, r))) == pytest.approx(1.0, abs=1e-9)
    random = P.subspace_fraction(x, rng.normal(size=(c, r)))
    assert 0.05 < random < 0.9
    # the 32 maps are a linear function of the r codes: held-out R^2 = 1
    codes = x @ a.T  # what a 1x1 conv with kernel a.T computes
    assert P.ridge_r2(codes[:2000], x[:2000], codes[2000:], x[2000:],
                      alpha=1e-10) == pytest.approx(1.0, abs=1e-8)
    # from fewer codes than the rank, not
    assert P.ridge_r2(codes[:2000, :r // 2] @ np.eye(r // 2), x[:2000],
                      codes[2000:, :r // 2], x[2000:]) < 0.99


def test_hand_computed_covariance():
    x = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])  # covariance diag(2, 0.5)
    np.testing.assert_allclose(P.pca_fractions(x), [0.8, 1.0])
    assert P.subspace_fraction(x, [[1.0], [0]]) == pytest.approx(0.8)
    assert P.subspace_fraction(x, [[0.0], [3]]) == pytest.approx(0.2)
    # the diagonal direction: (2 * 1/2 + 0.5 * 1/2) / 2.5
    assert P.subspace_fraction(x, [[1.0], [1]]) == pytest.approx(0.5)


def test_ridge_r2_of_noise_and_of_a_known_signal_to_noise_ratio(rng):
    x = rng.normal(size=(20000, 4))
    y_noise = rng.normal(size=(20000, 3))
    assert abs(P.ridge_r2(x[:10000], y_noise[:10000], x[10000:], y_noise[10000:])) < 0.01
    # y = x b + e with var(x b) = 3 and var(e) = 1 per output: R^2 = 3 / 4
    b = np.array([[1.0, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 0]])
    y = x @ b + rng.normal(size=(20000, 3))
    assert P.ridge_r2(x[:10000], y[:10000], x[10000:], y[10000:]) == pytest.approx(0.75,
                                                                                 abs=0.01)


def test_linear_probe_separable_random_and_scale_free(rng):
    k, n = 10, 300
    centers = rng.normal(size=(k, 5)) * 10
    y = np.repeat(np.arange(k), n)
    x = centers[y] + rng.normal(size=(k * n, 5))
    order = rng.permutation(k * n)
    x, y = x[order], y[order]
    half = k * n // 2
    assert P.linear_probe(x[:half], y[:half], x[half:], y[half:]) == 1.0
    assert P.linear_probe(1e3 * x[:half], y[:half], 1e3 * x[half:], y[half:]) == 1.0
    shuffled = rng.permutation(y)
    chance = P.linear_probe(x[:half], shuffled[:half], x[half:], shuffled[half:])
    assert 0.05 < chance < 0.16  # 10 classes: 0.1 +- a few binomial SDs (0.008)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match=r"x must be \[M, C\].*\[5\]"):
        P.pca_fractions(np.zeros(5))
    with pytest.raises(ValueError, match=r"basis must be \[C, r\] with C = 3.*\[4, 1\]"):
        P.subspace_fraction(np.eye(3), np.ones((4, 1)))
    with pytest.raises(ValueError, match=r"shapes do not match"):
        P.ridge_r2(np.ones((4, 2)), np.ones((3, 2)), np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"train_x \[N, D\], train_y \[N\]"):
        P.linear_probe(np.ones((4, 2)), np.ones(3), np.ones((4, 2)), np.ones(4))


class Two(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = jax.nn.relu(Lyr.Conv(6, (3, 3))(x))
        return Lyr.Pointwise(2)(h)


def test_layer_io_returns_the_layers_input_and_output(rng):
    model = Two()
    images = jnp.asarray(rng.integers(0, 256, size=(5, 8, 8, 1)), jnp.uint8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    x, y = P.layer_io(model, variables, images, "Pointwise_0", batch_size=2)
    h = jax.nn.relu(Lyr.Conv(6, (3, 3)).apply({"params": variables["params"]["Conv_0"]},
                                               images / 255.0))
    np.testing.assert_allclose(x, h, atol=1e-6)
    np.testing.assert_allclose(y, model.apply(variables, images / 255.0), atol=1e-6)
    pooled = P.layer_io(model, variables, images, "Pointwise_0", batch_size=2,
                        reduce=lambda a, b: {"a": a.mean((1, 2)), "b": b.max((1, 2))})
    np.testing.assert_allclose(pooled["a"], np.asarray(h).mean((1, 2)), atol=1e-6)
    assert pooled["b"].shape == (5, 2)
    with pytest.raises(ValueError, match=r"no layer at path 'Conv_9'"):
        P.layer_io(model, variables, images, "Conv_9")
