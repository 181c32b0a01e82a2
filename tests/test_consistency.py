"""The consistency regularizer: zero for identical passes, symmetric, stop-gradient targets."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from adamix_jax.adapters import AdaptationConfig
from adamix_jax.consistency import consistency_loss, symmetric_kl
from adamix_jax.routing import Routing
from tiny_models import batch, logits, make


def _random_logits(seed, shape=(5, 4)):
  return jax.random.normal(jax.random.PRNGKey(seed), shape) * 2.0


def _reference_symmetric_kl(l1, l2):
  p1 = np.exp(l1 - l1.max(-1, keepdims=True)); p1 /= p1.sum(-1, keepdims=True)
  p2 = np.exp(l2 - l2.max(-1, keepdims=True)); p2 /= p2.sum(-1, keepdims=True)
  kl_21 = (p2 * np.log(p2 / p1)).sum(-1)
  kl_12 = (p1 * np.log(p1 / p2)).sum(-1)
  return float((0.5 * (kl_21 + kl_12)).mean())


def test_symmetric_kl_matches_reference_and_is_symmetric():
  l1, l2 = _random_logits(0), _random_logits(1)
  got = consistency_loss(l1, l2, regression=False)
  np.testing.assert_allclose(float(got), _reference_symmetric_kl(np.asarray(l1, np.float64),
                                                                 np.asarray(l2, np.float64)),
                             rtol=1e-5)
  assert float(got) > 0.1
  np.testing.assert_allclose(float(consistency_loss(l2, l1, regression=False)), float(got),
                             rtol=1e-6)


def test_zero_for_identical_routing_with_dropout_off_and_positive_otherwise():
  adaptation = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=4, share_up=False)
  model, params = make(adaptation)
  b = batch()
  k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  same_1 = logits(model, params, b, Routing(key=k1))
  same_2 = logits(model, params, b, Routing(key=k1))
  assert float(consistency_loss(same_1, same_2, regression=False)) == 0.0
  # Independent routing draws (and, below, dropout masks) make the passes disagree.
  other = logits(model, params, b, Routing(key=k2))
  assert float(consistency_loss(same_1, other, regression=False)) > 0.0
  dropped_1 = logits(model, params, b, Routing(key=k1), deterministic=False, dropout_key=k1)
  dropped_2 = logits(model, params, b, Routing(key=k1), deterministic=False, dropout_key=k2)
  assert float(consistency_loss(dropped_1, dropped_2, regression=False)) > 0.0


def test_gradient_reaches_both_passes_but_not_through_the_targets():
  l1, l2 = _random_logits(2), _random_logits(3)
  g1, g2 = jax.grad(lambda a, b: symmetric_kl(a, b), argnums=(0, 1))(l1, l2)
  p1, p2 = jax.nn.softmax(l1), jax.nn.softmax(l2)
  batch_size = l1.shape[0]
  # d/dl1 of ½ KL(sg(p2) || p1) is ½ (p1 - p2) / B; KL(sg(p1) || p2) adds nothing. Without
  # the stop-gradients the second term would contribute too.
  chex.assert_trees_all_close(g1, 0.5 * (p1 - p2) / batch_size, atol=1e-6)
  chex.assert_trees_all_close(g2, 0.5 * (p2 - p1) / batch_size, atol=1e-6)
  assert float(jnp.abs(g1).max()) > 1e-3

  def no_stop_gradient(a, b):
    la, lb = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    return (0.5 * ((jnp.exp(lb) * (lb - la)).sum(-1) + (jnp.exp(la) * (la - lb)).sum(-1))).mean()

  g1_full = jax.grad(no_stop_gradient)(l1, l2)
  assert float(jnp.abs(g1_full - g1).max()) > 1e-3  # the check above can tell them apart


def test_regression_uses_squared_difference_not_the_vacuous_kl():
  y1 = jnp.array([[0.5], [1.0], [-2.0]])
  y2 = jnp.array([[1.5], [1.0], [0.0]])
  # A softmax over one output is 1: the official KL is identically zero here.
  assert float(symmetric_kl(y1, y2)) == 0.0
  got = consistency_loss(y1, y2, regression=True)
  np.testing.assert_allclose(float(got), (1.0 + 0.0 + 4.0) / 3, rtol=1e-6)
  np.testing.assert_allclose(float(consistency_loss(y2, y1, regression=True)), float(got))
  g1, g2 = jax.grad(lambda a, b: consistency_loss(a, b, regression=True), argnums=(0, 1))(y1, y2)
  chex.assert_trees_all_close(g1, (y1 - y2) / 3, atol=1e-7)
  chex.assert_trees_all_close(g2, (y2 - y1) / 3, atol=1e-7)


def test_weights_exclude_padding_rows():
  l1, l2 = _random_logits(4), _random_logits(5)
  weights = jnp.array([1.0, 1.0, 0.0, 1.0, 0.0])
  keep = np.array([0, 1, 3])
  got = consistency_loss(l1, l2, regression=False, weights=weights)
  want = consistency_loss(l1[keep], l2[keep], regression=False)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  # Garbage in a padding row changes nothing.
  garbage = l1.at[2].set(1e3)
  np.testing.assert_allclose(
      float(consistency_loss(garbage, l2, regression=False, weights=weights)), float(got),
      rtol=1e-6)
  assert float(consistency_loss(l1, l2, regression=False, weights=jnp.zeros(5))) == 0.0
