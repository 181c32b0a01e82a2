"""AdamW with unrouted experts left untouched (as PyTorch's AdamW skips grad-less params)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from adamix_jax import methods, optim, routing, train
from adamix_jax.adapters import AdaptationConfig
import tiny_models


def _opt_config(**kw):
  c = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.1,
                                     adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8,
                                     grad_clip_norm=0.0))
  c.update(kw)
  return c


def test_wrapper_keeps_value_and_moments_of_zero_gradient_experts():
  params = {'a': {'down_kernel': jnp.ones((3, 2, 2)), 'kernel': jnp.ones((2, 2))}}
  tx = optim.skip_unrouted_experts(
      optim.optax.adamw(1e-1, weight_decay=0.1), {('a', 'down_kernel')})
  state = tx.init(params)
  g0 = {'a': {'down_kernel': jnp.zeros((3, 2, 2)).at[0].set(1.0), 'kernel': jnp.ones((2, 2))}}
  updates, state = tx.update(g0, state, params)
  params = optim.optax.apply_updates(params, updates)
  assert not np.allclose(params['a']['down_kernel'][0], 1.0)  # routed expert moved
  np.testing.assert_array_equal(params['a']['down_kernel'][1:], 1.0)  # others: no decay
  mu_before = np.asarray(state[0].mu['a']['down_kernel'])
  g1 = {'a': {'down_kernel': jnp.zeros((3, 2, 2)).at[2].set(1.0), 'kernel': jnp.ones((2, 2))}}
  before = np.asarray(params['a']['down_kernel'])
  updates, state = tx.update(g1, state, params)
  after = np.asarray(optim.optax.apply_updates(params, updates)['a']['down_kernel'])
  # Expert 0 has momentum from step 1 but was not routed now: untouched, moments kept.
  np.testing.assert_array_equal(after[0], before[0])
  np.testing.assert_array_equal(np.asarray(state[0].mu['a']['down_kernel'])[0], mu_before[0])
  np.testing.assert_array_equal(after[1], before[1])
  assert not np.allclose(after[2], before[2])
  # Without the wrapper, momentum and decay would move expert 0 (the test can fail).
  plain = optim.optax.adamw(1e-1, weight_decay=0.1)
  s = plain.init(params)
  _, s = plain.update(g0, s, params)
  u, _ = plain.update(g1, s, params)
  assert np.abs(np.asarray(u['a']['down_kernel'][0])).max() > 0


def test_train_steps_change_only_routed_experts_with_adamw():
  adaptation = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=3, share_up=False)
  model, params = tiny_models.make(adaptation, num_labels=3)
  mask = methods.trainable_mask(params, 'adamix')
  trainable, frozen = methods.partition(params, mask)
  tx, schedule = optim.make_optimizer(_opt_config(), 10, adaptation, trainable)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=trainable,
                           opt_state=tx.init(trainable), rng=jax.random.PRNGKey(3))
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                   consistency_weight=0.0, regression=False))
  batch = tiny_models.batch(num_labels=3)
  checked = 0
  for i in range(4):
    before = traverse_util.flatten_dict(jax.device_get(state.params))
    key = jax.random.split(jax.random.fold_in(state.rng, state.step), 4)[0]
    state, _ = step(state, frozen, batch)
    after = traverse_util.flatten_dict(jax.device_get(state.params))
    for path, value in after.items():
      if path[-1] not in ('down_kernel', 'up_kernel'):
        continue
      layer = int(path[1].split('_')[1])
      chosen = int(routing.expert_index(routing.Routing(key=key), 3, layer=layer, site='ffn',
                                        projection=path[-1].split('_')[0]))
      for k in range(3):
        if k == chosen:
          assert not np.array_equal(value[k], before[path][k])
        else:
          np.testing.assert_array_equal(value[k], before[path][k], err_msg=f'step {i} {path}')
          checked += 1
  assert checked > 0
