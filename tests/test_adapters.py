"""Mixtures of adapters / LoRA: shapes, E=1 equivalence, routed experts, sparse updates."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from adamix_jax import methods
from adamix_jax import routing as routing_lib
from adamix_jax.adapters import AdaptationConfig, BottleneckAdapter
from adamix_jax.routing import Routing
from tiny_models import batch, logits, make

KEY = jax.random.PRNGKey(7)


def _unstack_single_expert(params):
  """The plain model's tree from an E=1 mixture's: drop the expert axis of mixture leaves."""
  flat = traverse_util.flatten_dict(params)
  leaves = ('down_kernel', 'down_bias', 'up_kernel', 'up_bias', 'lora_a', 'lora_b')
  return traverse_util.unflatten_dict(
      {p: (v[0] if p[-1] in leaves else v) for p, v in flat.items()})


def _without_lora(params):
  """The pretrained model's tree: the params minus their LoRA factors."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {p: v for p, v in flat.items() if p[-1] not in ('lora_a', 'lora_b')})


def _adapter_sites(tree, layer):
  """{site: adapter params} of one layer of a houlsby model."""
  node = tree['backbone'][f'layer_{layer}']
  return {'attention': node['attention']['output']['adapter'],
          'ffn': node['output']['adapter']}


def test_mixture_shapes_sharing_and_independent_init():
  h = jnp.ones((2, 3, 8))
  adaptation = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=3)  # up shared
  params = BottleneckAdapter(adaptation, 0, 'ffn').init(KEY, h, Routing(key=KEY))['params']
  chex.assert_shape(params['down_kernel'], (3, 8, 4))
  chex.assert_shape(params['down_bias'], (3, 4))
  chex.assert_shape(params['up_kernel'], (1, 4, 8))
  chex.assert_shape(params['up_bias'], (1, 8))
  down = np.asarray(params['down_kernel'])
  assert not np.allclose(down[0], down[1]) and not np.allclose(down[1], down[2])
  assert 0.01 < down.std() < 0.03  # normal(0, 0.02)
  assert not np.asarray(params['down_bias']).any() and not np.asarray(params['up_bias']).any()

  zero_up = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=3, share_up=False,
                             zero_init_up=True)
  params = BottleneckAdapter(zero_up, 0, 'ffn').init(KEY, h, Routing(key=KEY))['params']
  chex.assert_shape(params['up_kernel'], (3, 4, 8))
  assert not np.asarray(params['up_kernel']).any()


def test_single_expert_mixture_equals_plain_adapter_bit_identical():
  mixture = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=1, share_up=False,
                             placement='houlsby')
  plain = mixture.merged()
  assert plain.kind == 'adapter'
  model, params = make(mixture)
  plain_model, plain_init = make(plain)
  plain_params = _unstack_single_expert(params)
  chex.assert_trees_all_equal_shapes_and_dtypes(plain_params, plain_init)
  b = batch()
  got = logits(model, params, b, Routing(key=KEY))
  want = logits(plain_model, plain_params, b, Routing())
  chex.assert_trees_all_equal(got, want)


def test_single_expert_lora_mixture_equals_plain_lora_bit_identical():
  mixture = AdaptationConfig(kind='adamix_lora', lora_rank=2, num_experts=1, share_up=False,
                             lora_targets=('query', 'value', 'intermediate'))
  model, params = make(mixture)
  # Make B non-zero so the LoRA path actually contributes.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: (v + 0.1 if p[-1].key == 'lora_b' else v), params)
  plain_model, plain_init = make(mixture.merged())
  plain_params = _unstack_single_expert(params)
  chex.assert_trees_all_equal_shapes_and_dtypes(plain_params, plain_init)
  b = batch()
  got = logits(model, params, b, Routing(key=KEY))
  chex.assert_trees_all_equal(got, logits(plain_model, plain_params, b, Routing()))
  base_model, _ = make(AdaptationConfig())
  base = logits(base_model, _without_lora(params), b, Routing())
  assert np.abs(np.asarray(got) - np.asarray(base)).max() > 1e-4  # LoRA is active


def test_lora_starts_at_the_pretrained_function():
  adaptation = AdaptationConfig(kind='adamix_lora', lora_rank=2, num_experts=3, share_up=False)
  model, params = make(adaptation)
  base_model, _ = make(AdaptationConfig())
  b = batch()
  chex.assert_trees_all_close(logits(model, params, b, Routing(key=KEY)),
                              logits(base_model, _without_lora(params), b, Routing()), atol=1e-6)


def test_routed_forward_equals_plain_adapter_holding_the_drawn_experts():
  adaptation = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=4, share_up=False,
                                placement='houlsby')
  model, params = make(adaptation)
  plain_model, _ = make(adaptation.merged())
  routing = Routing(key=KEY)
  selected = jax.tree_util.tree_map(lambda x: x, params)
  for layer in range(2):
    for site, adapter in _adapter_sites(selected, layer).items():
      for side in ('down', 'up'):
        k = int(routing_lib.expert_index(routing, 4, layer=layer, site=site, projection=side))
        for leaf in (f'{side}_kernel', f'{side}_bias'):
          adapter[leaf] = adapter[leaf][k]
  b = batch()
  chex.assert_trees_all_close(logits(model, params, b, routing),
                              logits(plain_model, selected, b, Routing()), atol=1e-6)


def _adam_step(model, params, method, b, routing):
  """One Adam step on the method's trainable parameters (frozen ones stay out of it)."""
  trainable, frozen = methods.partition(params, methods.trainable_mask(params, method))

  def loss(t):
    out = logits(model, methods.combine(t, frozen), b, routing)
    return optax.softmax_cross_entropy_with_integer_labels(out, b['labels']).mean()

  opt = optax.adam(1e-2)
  grads = jax.jit(jax.grad(loss))(trainable)
  updates, _ = opt.update(grads, opt.init(trainable), trainable)
  return methods.combine(optax.apply_updates(trainable, updates), frozen)


def _assert_only_selected_changed(before, after, selected_index):
  """Per mixture leaf: the selected slice changed, every other slice bit-identical."""
  for path, old in before.items():
    new = after[path]
    k = selected_index(path)
    for e in range(old.shape[0]):
      if e == k:
        assert np.abs(np.asarray(new[e]) - np.asarray(old[e])).max() > 0, (path, e)
      else:
        np.testing.assert_array_equal(np.asarray(new[e]), np.asarray(old[e]),
                                      err_msg=f'{path} expert {e}')


def test_gradient_step_changes_only_selected_experts_and_never_the_backbone():
  adaptation = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=4, share_up=False,
                                placement='houlsby')
  model, params = make(adaptation)
  routing = Routing(key=KEY)
  new = _adam_step(model, params, 'adamix', batch(), routing)

  before, after = (traverse_util.flatten_dict(p) for p in (params, new))
  adapters = {p: v for p, v in before.items() if 'adapter' in p}
  assert len(adapters) == 2 * 2 * 4  # layers x sites x leaves

  def selected(path):
    site = 'attention' if path[2] == 'attention' else 'ffn'
    side = path[-1].split('_')[0]
    return int(routing_lib.expert_index(routing, 4, layer=int(path[1][len('layer_'):]),
                                        site=site, projection=side))

  _assert_only_selected_changed(adapters, after, selected)
  for path, old in before.items():
    if path in adapters:
      continue
    if path[0] == 'classifier':
      assert np.abs(np.asarray(after[path]) - np.asarray(old)).max() > 0, path
    else:
      np.testing.assert_array_equal(np.asarray(after[path]), np.asarray(old),
                                    err_msg='/'.join(path))


def test_gradient_step_changes_only_selected_lora_experts():
  adaptation = AdaptationConfig(kind='adamix_lora', lora_rank=2, num_experts=3, share_up=False)
  model, params = make(adaptation)
  # B starts at 0, which gives A a zero gradient: move B off zero so both sides train.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: (v + 0.05 if p[-1].key == 'lora_b' else v), params)
  routing = Routing(key=jax.random.PRNGKey(3))
  new = _adam_step(model, params, 'adamix_lora', batch(), routing)
  before, after = (traverse_util.flatten_dict(p) for p in (params, new))
  lora = {p: v for p, v in before.items() if p[-1] in ('lora_a', 'lora_b')}
  assert len(lora) == 2 * 2 * 2  # layers x (query, value) x (A, B)

  def selected(path):
    projection = path[-1]
    return int(routing_lib.expert_index(routing, 3, layer=int(path[1][len('layer_'):]),
                                        site=path[-2], projection=projection))

  _assert_only_selected_changed(lora, after, selected)
  for path, old in before.items():
    if path not in lora and path[0] == 'backbone':
      np.testing.assert_array_equal(np.asarray(after[path]), np.asarray(old))


@pytest.mark.parametrize('placement', ['ffn', 'houlsby'])
def test_placement_decides_adapter_sites(placement):
  _, params = make(AdaptationConfig(kind='adapter', adapter_size=4, placement=placement))
  layer = params['backbone']['layer_0']
  assert 'adapter' in layer['output']
  assert ('adapter' in layer['attention']['output']) == (placement == 'houlsby')
