"""The optimizer's treatment of unrouted experts: official (against the official loop's
PyTorch AdamW), frozen and dense."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from adamix_jax import methods, optim, routing, train
from adamix_jax.adapters import AdaptationConfig
import tiny_models


def _opt_config(**kw):
  c = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.1,
                                     adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8,
                                     grad_clip_norm=0.0, expert_updates='frozen'))
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
  state = train.create_train_state(trainable, tx, seed=3)
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                   consistency_weight=0.0, regression=False))
  batch = tiny_models.batch(num_labels=3)
  checked = 0
  for i in range(4):
    before = traverse_util.flatten_dict(jax.device_get(state.params))
    key = train.step_keys(state.rng, state.step)[0]
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


def _routed_gradients(num_steps: int, num_experts: int, seed: int = 0):
  """Per step: the routed experts (one or two: the consistency pass may route another) and
  gradients for a stacked `[E, 3, 2]` leaf, a shared `[1, 2, 3]` leaf and a dense head."""
  rng = np.random.RandomState(seed)
  steps = []
  for t in range(num_steps):
    # Expert E-1 can be routed from step 10 on: its state must start late.
    pool = num_experts - 1 if t < 10 else num_experts
    routed = sorted(set(rng.randint(0, pool, size=rng.randint(1, 3))))
    down = np.zeros((num_experts, 3, 2), np.float32)
    for k in routed:
      down[k] = rng.randn(3, 2) * (1 + t % 3)
    steps.append((routed, {'adapter': {'down_kernel': down,
                                       'up_kernel': rng.randn(1, 2, 3).astype(np.float32)},
                           'classifier': {'kernel': rng.randn(3, 2).astype(np.float32),
                                          'bias': rng.randn(2).astype(np.float32)}}))
  return steps


def _torch_official(params, steps, config, total_steps):
  """The official loop's optimizer on the same gradients: each expert its own tensor."""
  import torch
  import official_loop
  torch_params = {
      **{f'adapter.down_kernel.{k}': torch.tensor(np.asarray(v))
         for k, v in enumerate(params['adapter']['down_kernel'])},
      'adapter.up_kernel.0': torch.tensor(np.asarray(params['adapter']['up_kernel'][0])),
      'classifier.kernel': torch.tensor(np.asarray(params['classifier']['kernel'])),
      'classifier.bias': torch.tensor(np.asarray(params['classifier']['bias'])),
  }
  for p in torch_params.values():
    p.requires_grad_(True)
  opt = official_loop.AdamW442(
      official_loop.decay_groups(torch_params.items(), config.weight_decay),
      lr=config.learning_rate, betas=(config.adam_b1, config.adam_b2), eps=config.adam_eps)
  sched = official_loop.linear_schedule(opt, config.warmup_ratio, total_steps)
  for routed, grads in steps:
    for k in routed:  # backward reaches the routed experts only
      g = torch.tensor(grads['adapter']['down_kernel'][k])
      p = torch_params[f'adapter.down_kernel.{k}']
      p.grad = g if p.grad is None else p.grad + g
    for name, g in (('adapter.up_kernel.0', grads['adapter']['up_kernel'][0]),
                    ('classifier.kernel', grads['classifier']['kernel']),
                    ('classifier.bias', grads['classifier']['bias'])):
      torch_params[name].grad = torch.tensor(g)
    official_loop.clip_grad_norm_torch_1x(torch_params.values(), config.grad_clip_norm)
    opt.step()
    sched.step()
    official_loop.zero_grad_torch_1x(torch_params.values())
  return {name: p.detach().numpy() for name, p in torch_params.items()}


def _jax_run(params, steps, config, total_steps):
  tx, _ = optim.make_optimizer(config, total_steps)
  if config.expert_updates == 'official':  # the stacked leaf, as make_optimizer finds it
    tx = optim.official_adamw(optim.make_schedule(config, total_steps), b1=config.adam_b1,
                              b2=config.adam_b2, eps=config.adam_eps,
                              weight_decay=config.weight_decay,
                              expert_paths={('adapter', 'down_kernel')})
    tx = optim.optax.chain(optim.clip_by_global_norm_torch(config.grad_clip_norm), tx)
  elif config.expert_updates == 'frozen':
    tx = optim.skip_unrouted_experts(tx, {('adapter', 'down_kernel')})
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _, grads in steps:
    updates, state = update(jax.tree_util.tree_map(jnp.asarray, grads), state, params)
    params = optim.optax.apply_updates(params, updates)
  return params, state


def test_official_updates_match_the_official_loops_adamw_expert_by_expert():
  num_experts, total = 4, 30
  params = {'adapter': {'down_kernel': jnp.asarray(np.random.RandomState(1).randn(4, 3, 2),
                                                   jnp.float32),
                        'up_kernel': jnp.ones((1, 2, 3)) * 0.5},
            'classifier': {'kernel': jnp.ones((3, 2)), 'bias': jnp.ones((2,))}}
  steps = _routed_gradients(total, num_experts)
  config = _opt_config(learning_rate=3e-2, warmup_ratio=0.1, grad_clip_norm=1.0,
                       expert_updates='official')
  reference = _torch_official(params, steps, config, total)
  ours, state = _jax_run(params, steps, config, total)
  for k in range(num_experts):
    np.testing.assert_allclose(ours['adapter']['down_kernel'][k],
                               reference[f'adapter.down_kernel.{k}'], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ours['adapter']['up_kernel'][0], reference['adapter.up_kernel.0'],
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ours['classifier']['kernel'], reference['classifier.kernel'],
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ours['classifier']['bias'], reference['classifier.bias'],
                             rtol=1e-5, atol=1e-7)
  # Each expert counts its own steps, from its first routing on (expert 3 from step >= 10).
  first = [min(t for t, (routed, _) in enumerate(steps) if k in routed)
           for k in range(num_experts)]
  np.testing.assert_array_equal(state[1].counts['adapter']['down_kernel'],
                                [total - f for f in first])
  assert first[-1] >= 10
  # The other semantics give other experts (the comparison can tell them apart).
  for mode in ('frozen', 'dense'):
    other, _ = _jax_run(params, steps, _opt_config(
        learning_rate=3e-2, warmup_ratio=0.1, grad_clip_norm=1.0, expert_updates=mode), total)
    diff = max(np.abs(np.asarray(other['adapter']['down_kernel'][k]) -
                      reference[f'adapter.down_kernel.{k}']).max() for k in range(num_experts))
    assert diff > 1e-3, mode


def test_official_expert_moves_on_steps_it_is_not_routed():
  params = {'adapter': {'down_kernel': jnp.ones((2, 2, 2))}}
  tx = optim.official_adamw(1e-1, weight_decay=0.1, expert_paths={('adapter', 'down_kernel')})
  state = tx.init(params)
  routed_0 = {'adapter': {'down_kernel': jnp.zeros((2, 2, 2)).at[0].set(1.0)}}
  updates, state = tx.update(routed_0, state, params)
  params = optim.optax.apply_updates(params, updates)
  # Expert 1 was never routed: no state, no decay, no move.
  np.testing.assert_array_equal(params['adapter']['down_kernel'][1], 1.0)
  np.testing.assert_array_equal(state.counts['adapter']['down_kernel'], [1, 0])
  routed_1 = {'adapter': {'down_kernel': jnp.zeros((2, 2, 2)).at[1].set(1.0)}}
  before = np.asarray(params['adapter']['down_kernel'])
  updates, state = tx.update(routed_1, state, params)
  after = np.asarray(optim.optax.apply_updates(params, updates)['adapter']['down_kernel'])
  # Expert 0 was not routed now but has started: momentum and decay move it.
  assert np.abs(after[0] - before[0]).min() > 1e-3
  np.testing.assert_array_equal(state.counts['adapter']['down_kernel'], [2, 1])


def test_unknown_expert_updates_is_refused():
  with pytest.raises(ValueError, match="expert_updates='sparse'"):
    optim.make_optimizer(_opt_config(expert_updates='sparse'), 10)
