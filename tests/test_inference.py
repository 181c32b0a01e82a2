"""Inference modes: merged, random, expert=k and ensemble."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adamix_jax import merging
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.inference import predict
from adamix_jax.routing import Routing
from tiny_models import batch, logits, make

ADAMIX = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=3, share_up=False)


def test_modes_classification():
  model, params = make(ADAMIX)
  b = batch()
  per_expert = [jax.nn.softmax(logits(model, params, b, Routing(expert=k))) for k in range(3)]
  ensemble = predict(model, params, b, mode='ensemble')
  chex.assert_trees_all_close(ensemble, sum(per_expert) / 3, atol=1e-6)
  chex.assert_trees_all_close(ensemble.sum(-1), jnp.ones(4), atol=1e-6)
  chex.assert_trees_all_close(predict(model, params, b, mode='expert', expert=1), per_expert[1],
                              atol=1e-6)
  key = jax.random.PRNGKey(5)
  chex.assert_trees_all_close(predict(model, params, b, mode='random', key=key),
                              jax.nn.softmax(logits(model, params, b, Routing(key=key))),
                              atol=1e-6)
  merged_model, merged_params = merging.merged_model(model, params)
  merged = predict(merged_model, merged_params, b, mode='merged')
  chex.assert_trees_all_close(merged, jax.nn.softmax(logits(merged_model, merged_params, b,
                                                            Routing())), atol=1e-6)
  assert float(jnp.abs(merged - ensemble).max()) > 0  # distinct modes, distinct predictions
  # Jittable with the mode static.
  jitted = jax.jit(functools.partial(predict, model, mode='ensemble'))
  chex.assert_trees_all_close(jitted(params, b), ensemble, atol=1e-6)


def test_modes_regression_average_predictions():
  model, params = make(ADAMIX, num_labels=1)
  b = batch(num_labels=1)
  per_expert = [logits(model, params, b, Routing(expert=k))[:, 0] for k in range(3)]
  got = predict(model, params, b, mode='ensemble')
  chex.assert_shape(got, (4,))
  chex.assert_trees_all_close(got, sum(per_expert) / 3, atol=1e-6)


def test_mode_errors():
  model, params = make(ADAMIX)
  b = batch()
  with pytest.raises(ValueError, match='merged_model'):
    predict(model, params, b, mode='merged')
  with pytest.raises(ValueError, match='key'):
    predict(model, params, b, mode='random')
  with pytest.raises(ValueError, match='expert=k'):
    predict(model, params, b, mode='expert')
  with pytest.raises(ValueError, match='Unknown inference mode'):
    predict(model, params, b, mode='vote')
  plain_model, plain_params = merging.merged_model(model, params)
  with pytest.raises(ValueError, match='needs a mixture'):
    predict(plain_model, plain_params, b, mode='ensemble')
  np.testing.assert_array_equal(predict(plain_model, plain_params, b).shape, (4, 3))
