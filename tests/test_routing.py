"""Stochastic routing: uniform, independent, reproducible, and identical across devices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from adamix_jax import routing as routing_lib
from adamix_jax.routing import Routing

import routing_worker
from conftest import xla_flags

E = 4
STEPS = 4000
LAYERS = 3
SITES = ('attention', 'ffn')
PROJECTIONS = ('down', 'up')
# Bonferroni over every cell tested below, at a family-wise level of 1e-3.
ALPHA = 1e-3 / (LAYERS * len(SITES) * len(PROJECTIONS))


def _routed_indices(seed: int = 0) -> dict[tuple[int, str, str], np.ndarray]:
  """Expert index of every (layer, site, projection) on steps 0..STEPS-1, as the trainer draws."""
  base = jax.random.PRNGKey(seed)

  @jax.jit
  @jax.vmap
  def draw(step):
    routing = Routing(key=jax.random.fold_in(base, step))
    return jnp.stack([routing_lib.expert_index(routing, E, layer=l, site=s, projection=p)
                      for l in range(LAYERS) for s in SITES for p in PROJECTIONS])

  drawn = np.asarray(draw(jnp.arange(STEPS)))
  cells = [(l, s, p) for l in range(LAYERS) for s in SITES for p in PROJECTIONS]
  return {cell: drawn[:, i] for i, cell in enumerate(cells)}


def _chi2_uniform_pvalue(indices: np.ndarray, num_categories: int) -> float:
  counts = np.bincount(indices, minlength=num_categories)
  return float(stats.chisquare(counts).pvalue)


@pytest.fixture(scope='module')
def routed():
  return _routed_indices()


def test_every_expert_of_every_layer_selected_uniformly(routed):
  for cell, indices in routed.items():
    counts = np.bincount(indices, minlength=E)
    assert counts.min() > 0, (cell, counts)
    assert _chi2_uniform_pvalue(indices, E) > ALPHA, (cell, counts)


def test_biased_router_fails_the_uniformity_test():
  # A mildly biased router (31% / 23% / 23% / 23%) over as many steps.
  keys = jax.random.split(jax.random.PRNGKey(1), STEPS)
  logits = jnp.log(jnp.array([0.31, 0.23, 0.23, 0.23]))
  biased = np.asarray(jax.vmap(lambda k: jax.random.categorical(k, logits))(keys))
  assert np.bincount(biased, minlength=E).min() > 0  # every expert is still selected...
  assert _chi2_uniform_pvalue(biased, E) < ALPHA  # ...but the test catches the bias


def _joint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return a * E + b


def test_draws_independent_across_projections_sites_and_layers(routed):
  pairs = [((0, 'ffn', 'down'), (0, 'ffn', 'up')),  # down vs up of one adapter
           ((0, 'ffn', 'down'), (0, 'attention', 'down')),  # two sites of one layer
           ((0, 'ffn', 'down'), (1, 'ffn', 'down')),  # two layers
           ((1, 'attention', 'up'), (2, 'attention', 'up'))]
  for a, b in pairs:
    assert _chi2_uniform_pvalue(_joint(routed[a], routed[b]), E * E) > ALPHA, (a, b)


def test_shared_key_for_down_and_up_fails_the_independence_test(routed):
  down = routed[(0, 'ffn', 'down')]
  same_draw = down  # what a router reusing one key for both projections would produce
  assert _chi2_uniform_pvalue(_joint(down, same_draw), E * E) < ALPHA


def test_same_seed_and_step_give_same_routing_and_steps_differ():
  again = _routed_indices(seed=0)
  other = _routed_indices(seed=1)
  for cell, indices in _routed_indices(seed=0).items():
    np.testing.assert_array_equal(indices, again[cell])
    assert (indices[1:] != indices[:-1]).any()  # redrawn every step
    assert (indices != other[cell]).mean() > 0.5  # a different seed routes differently


def test_fixed_expert_shared_side_and_errors():
  assert routing_lib.expert_index(Routing(expert=2), 4, layer=0, site='ffn',
                                  projection='down') == 2
  # A shared side (a single expert) always uses 0, whatever the routing.
  assert routing_lib.expert_index(Routing(expert=2), 1, layer=0, site='ffn',
                                  projection='up') == 0
  assert routing_lib.expert_index(Routing(key=jax.random.PRNGKey(0)), 1, layer=0,
                                  site='ffn', projection='up') == 0
  with pytest.raises(ValueError, match='out of range'):
    routing_lib.expert_index(Routing(expert=4), 4, layer=0, site='ffn', projection='down')
  with pytest.raises(ValueError, match='no routing was given'):
    routing_lib.expert_index(Routing(), 4, layer=0, site='ffn', projection='down')
  with pytest.raises(ValueError, match='not both'):
    Routing(key=jax.random.PRNGKey(0), expert=1)


def test_select_expert_static_and_traced_index():
  stacked = jnp.arange(4 * 3 * 2, dtype=jnp.float32).reshape(4, 3, 2)
  np.testing.assert_array_equal(routing_lib.select_expert(stacked, 2), stacked[2])
  traced = jax.jit(routing_lib.select_expert)(stacked, jnp.int32(3))
  np.testing.assert_array_equal(traced, stacked[3])


def test_same_seed_and_step_route_identically_on_1_and_8_devices(tmp_path):
  worker = Path(__file__).with_name('routing_worker.py')
  out = tmp_path / 'eight.npz'
  env = dict(os.environ, XLA_FLAGS=xla_flags('--xla_force_host_platform_device_count=8'),
             JAX_PLATFORMS='cpu')
  subprocess.run([sys.executable, str(worker), '8', str(out)], check=True, env=env, timeout=300)
  with np.load(out) as data:
    eight = dict(data)
  one = routing_worker.routed_outputs(1)
  assert one.keys() == eight.keys()
  for name in one:
    if name.startswith('logits'):
      np.testing.assert_allclose(eight[name], one[name], rtol=1e-6, atol=1e-6)
    else:
      np.testing.assert_array_equal(eight[name], one[name], err_msg=name)
  # The experts the model used are the ones the router drew, and the draws vary by step.
  for step in range(routing_worker.STEPS):
    np.testing.assert_array_equal(one[f'used_{step}'], one[f'drawn_{step}'])
  assert len({tuple(one[f'drawn_{s}']) for s in range(routing_worker.STEPS)}) > 1
