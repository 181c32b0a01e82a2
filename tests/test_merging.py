"""Merging experts: plain trees, exact equivalences, LoRA mean_delta / folding, Fisher weights."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from adamix_jax import adapters, fisher, merging
from adamix_jax.adapters import AdaptationConfig, LoRADense
from adamix_jax.routing import Routing
from tiny_models import CONFIG, batch, logits, make

KEY = jax.random.PRNGKey(11)
ONE_LAYER = dataclasses.replace(CONFIG, num_hidden_layers=1)  # Fisher tests compile less
MIXTURE_LEAVES = ('down_kernel', 'down_bias', 'up_kernel', 'up_bias', 'lora_a', 'lora_b')

ADAMIX_FFN = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=4)  # up shared
ADAMIX_HOULSBY = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=3, share_up=False,
                                  share_down=True, placement='houlsby')
LORA_SHARED_B = AdaptationConfig(kind='adamix_lora', lora_rank=2, num_experts=3)
LORA_FULL = AdaptationConfig(kind='adamix_lora', lora_rank=2, num_experts=3, share_up=False,
                             lora_targets=('query', 'value', 'output'))


def _perturbed(params, scale=0.05, seed=0):
  """Trained-looking params: every mixture leaf (LoRA's zero B included) moved off its init."""
  rng = np.random.RandomState(seed)
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({
      p: (v + scale * rng.randn(*v.shape).astype(np.float32) if p[-1] in MIXTURE_LEAVES else v)
      for p, v in flat.items()})


def _numpy_average(params):
  """An independent merge: numpy mean over axis 0 of every stacked leaf."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {p: (np.asarray(v).mean(axis=0) if p[-1] in MIXTURE_LEAVES else v)
       for p, v in flat.items()})


def _count(tree, names=MIXTURE_LEAVES):
  return sum(v.size for p, v in traverse_util.flatten_dict(tree).items() if p[-1] in names)


@pytest.mark.parametrize('adaptation', [ADAMIX_FFN, ADAMIX_HOULSBY, LORA_SHARED_B, LORA_FULL],
                         ids=['adamix_ffn', 'adamix_houlsby', 'lora_shared_b', 'lora_full'])
def test_merged_tree_is_the_plain_tree_and_means_the_experts(adaptation):
  model, params = make(adaptation)
  params = _perturbed(params)
  merged, merged_adaptation = merging.merge_experts(params, adaptation)
  assert merged_adaptation == adaptation.merged()
  _, plain_init = make(merged_adaptation)
  chex.assert_trees_all_equal_shapes_and_dtypes(merged, plain_init)
  chex.assert_trees_all_close(merged, _numpy_average(params), atol=1e-7)
  # Merged parameter count = a single adapter's, fewer than the mixture's.
  assert _count(merged) == _count(plain_init) < _count(params)


def test_merged_model_equals_plain_model_loaded_with_averaged_arrays():
  model, params = make(ADAMIX_HOULSBY)
  params = _perturbed(params)
  merged_model, merged_params = merging.merged_model(model, params)
  plain_model, _ = make(ADAMIX_HOULSBY.merged())
  assert merged_model == plain_model
  b = batch()
  got = logits(merged_model, merged_params, b, Routing())
  want = logits(plain_model, _numpy_average(params), b, Routing())
  chex.assert_trees_all_close(got, want, atol=1e-6)
  # The merged model is none of the experts.
  expert_0 = logits(model, params, b, Routing(expert=0))
  assert float(jnp.abs(got - expert_0).max()) > 1e-4


def test_merging_a_plain_model_is_the_identity():
  adaptation = AdaptationConfig(kind='adapter', adapter_size=4)
  _, params = make(adaptation)
  merged, merged_adaptation = merging.merge_experts(params, adaptation)
  assert merged is params and merged_adaptation == adaptation


def _lora_dense_params(e_a, e_b, d_in=6, d_out=5, r=2):
  ks = jax.random.split(KEY, 4)
  return {'kernel': jax.random.normal(ks[0], (d_in, d_out)),
          'bias': jax.random.normal(ks[1], (d_out,)),
          'lora_a': jax.random.normal(ks[2], (e_a, d_in, r)),
          'lora_b': jax.random.normal(ks[3], (e_b, r, d_out))}


def test_lora_mean_delta_rank_er_and_kernel_fold_equal_the_mean_of_expert_updates():
  adaptation = AdaptationConfig(kind='adamix_lora', lora_rank=2, lora_alpha=6.0,
                                num_experts=3, share_up=False, lora_targets=('query',))
  params = _lora_dense_params(3, 3)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 6))
  mixture = LoRADense(5, adaptation, 0, 'query')
  # A linear layer is linear in its update: the mean of the expert models' outputs is the
  # output of the mean update.
  want = sum(mixture.apply({'params': params}, x, Routing(expert=k)) for k in range(3)) / 3

  merged, lora = merging.merge_experts({'dense': params}, adaptation, lora_merge='mean_delta')
  assert (lora.kind, lora.lora_rank, lora.lora_alpha) == ('lora', 6, 18.0)
  chex.assert_shape(merged['dense']['lora_a'], (6, 6))
  chex.assert_shape(merged['dense']['lora_b'], (6, 5))
  rank_er = LoRADense(5, lora, 0, 'query').apply({'params': merged['dense']}, x, Routing())
  chex.assert_trees_all_close(rank_er, want, atol=1e-5)

  folded, plain = merging.merge_experts({'dense': params}, adaptation, lora_merge='mean_delta',
                                        fold_lora=True)
  assert plain.kind == 'none' and set(folded['dense']) == {'kernel', 'bias'}
  served = LoRADense(5, plain, 0, 'query').apply({'params': folded['dense']}, x, Routing())
  chex.assert_trees_all_close(served, want, atol=1e-5)

  # mean_factors is a different model when both sides have experts...
  factors, _ = merging.merge_experts({'dense': params}, adaptation)
  approx = LoRADense(5, adaptation.merged(), 0, 'query').apply({'params': factors['dense']}, x,
                                                               Routing())
  assert float(jnp.abs(approx - want).max()) > 1e-2


def test_lora_mean_delta_with_a_shared_side_is_mean_factors():
  params = _lora_dense_params(3, 1)
  adaptation = AdaptationConfig(kind='adamix_lora', lora_rank=2, num_experts=3,
                                lora_targets=('query',))
  delta, lora = merging.merge_experts({'d': params}, adaptation, lora_merge='mean_delta')
  factors, _ = merging.merge_experts({'d': params}, adaptation)
  assert lora == adaptation.merged()
  chex.assert_trees_all_equal(delta, factors)


def test_model_mean_delta_folded_into_kernels_equals_unmerged_mean_of_deltas_model():
  model, params = make(LORA_FULL)
  params = _perturbed(params, scale=0.2)
  rank_er_model, rank_er = merging.merged_model(model, params, lora_merge='mean_delta')
  served_model, served = merging.merged_model(model, params, lora_merge='mean_delta',
                                              fold_lora=True)
  _, plain_init = make(AdaptationConfig(kind='none'))
  chex.assert_trees_all_equal_shapes_and_dtypes(served, plain_init)
  assert served_model.adaptation.kind == 'none'
  b = batch()
  want = logits(rank_er_model, rank_er, b, Routing())
  chex.assert_trees_all_close(logits(served_model, served, b, Routing()), want, atol=1e-5)
  # The LoRA updates matter for the output (the comparison is not between base models).
  base = logits(served_model, _strip_lora(params), b, Routing())
  assert float(jnp.abs(want - base).max()) > 1e-3


def _strip_lora(params):
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {p: v for p, v in flat.items() if p[-1] not in ('lora_a', 'lora_b')})


def test_fold_plain_lora_into_kernels_and_reject_mixtures():
  adaptation = AdaptationConfig(kind='lora', lora_rank=2, lora_alpha=4.0,
                                lora_targets=('key', 'intermediate'))
  model, params = make(adaptation)
  params = _perturbed(params, scale=0.2)
  folded, plain = merging.fold_lora_into_kernels(params, adaptation)
  plain_model, plain_init = make(plain)
  chex.assert_trees_all_equal_shapes_and_dtypes(folded, plain_init)
  b = batch()
  chex.assert_trees_all_close(logits(plain_model, folded, b, Routing()),
                              logits(model, params, b, Routing()), atol=1e-5)
  with pytest.raises(ValueError, match='merge the experts'):
    merging.fold_lora_into_kernels(params, LORA_FULL)


def test_weighted_merge_is_elementwise_fisher_average():
  adaptation = ADAMIX_FFN
  _, params = make(adaptation)
  params = _perturbed(params)
  mixture = adapters.mixture_leaves(params, adaptation)
  rng = np.random.RandomState(0)
  weights = {p: rng.rand(*v.shape).astype(np.float32) for p, v in mixture.items()}
  merged, _ = merging.merge_experts(params, adaptation,
                                    expert_weights=traverse_util.unflatten_dict(weights))
  flat = traverse_util.flatten_dict(merged)
  for path, theta in mixture.items():
    theta, w = np.asarray(theta), weights[path] + 1e-8
    want = (w * theta).sum(0) / w.sum(0)
    np.testing.assert_allclose(np.asarray(flat[path]), want, rtol=1e-5, atol=1e-7)
  # All the weight on expert 2: the merge is expert 2 (shared sides are unchanged).
  one_hot = {p: np.zeros(v.shape, np.float32) for p, v in mixture.items()}
  for w in one_hot.values():
    w[2 % w.shape[0]] = 1.0
  merged, _ = merging.merge_experts(params, adaptation,
                                    expert_weights=traverse_util.unflatten_dict(one_hot))
  flat = traverse_util.flatten_dict(merged)
  for path, theta in mixture.items():
    np.testing.assert_allclose(np.asarray(flat[path]), np.asarray(theta)[2 % theta.shape[0]],
                               atol=1e-6)


def test_diagonal_fisher_is_mean_squared_per_example_gradient_of_each_expert():
  adaptation = AdaptationConfig(kind='adamix', adapter_size=2, num_experts=2)  # up shared
  model, params = make(adaptation, config=ONE_LAYER)
  b = dict(batch(size=3), weights=jnp.array([1.0, 1.0, 0.0]))
  estimate = fisher.diagonal_fisher(fisher.log_likelihood_fn(model, regression=False), params,
                                     adaptation, [b])
  flat_fisher = traverse_util.flatten_dict(estimate)
  assert flat_fisher.keys() == adapters.mixture_leaves(params, adaptation).keys()

  log_likelihood = fisher.log_likelihood_fn(model, regression=False)
  per_expert = []
  for k in range(2):
    # One example at a time, with its own (batch-of-one) gradient.
    grad = jax.jit(jax.grad(lambda p, one, k=k: log_likelihood(p, one, Routing(expert=k))[0]))
    grads = [traverse_util.flatten_dict(grad(params, {n: v[i:i + 1] for n, v in b.items()}))
             for i in range(2)]
    per_expert.append({p: sum(np.asarray(g[p])**2 for g in grads) / 2 for p in flat_fisher})
  for path, got in flat_fisher.items():
    got = np.asarray(got)
    if got.shape[0] == 2:  # slice k is expert k's Fisher
      want = np.stack([per_expert[k][path][k] for k in range(2)])
    else:  # the shared up projection: its Fisher averaged over the two routed models
      want = (per_expert[0][path] + per_expert[1][path]) / 2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-10)
    assert got.max() > 0


def test_fisher_merge_returns_the_plain_tree():
  adaptation = AdaptationConfig(kind='adamix', adapter_size=2, num_experts=2)
  model, params = make(adaptation, num_labels=1, config=ONE_LAYER)
  b = batch(size=2, num_labels=1)
  merged, merged_adaptation = fisher.fisher_merge(model, _perturbed(params), iter([b, b, b]),
                                                   regression=True, num_batches=1)
  _, plain_init = make(merged_adaptation, num_labels=1, config=ONE_LAYER)
  chex.assert_trees_all_equal_shapes_and_dtypes(merged, plain_init)
  with pytest.raises(ValueError, match='mixture'):
    fisher.diagonal_fisher(lambda *a: None, plain_init, merged_adaptation, [b])


def test_fisher_compiles_once_per_model_with_parameters_as_arguments():
  """Every evaluation of a run merges again: the per-expert Fisher programs are compiled
  once, and the parameters are arguments, not constants baked into the program."""
  adaptation = AdaptationConfig(kind='adamix', adapter_size=2, num_experts=2)
  model, params = make(adaptation, num_labels=1, config=ONE_LAYER)
  b = batch(size=2, num_labels=1)
  for scale in (1.0, 2.0):  # two evaluations: other parameters, same shapes
    fisher.fisher_merge(model, jax.tree_util.tree_map(lambda x: x * scale, params), [b],
                         regression=True)
  fn = fisher._squared_grads_fn(fisher.log_likelihood_fn(model, regression=True))
  assert fn._cache_size() == adaptation.num_experts  # one per expert index, not per call
  flat = traverse_util.flatten_dict(params)
  mixture = adapters.mixture_leaves(params, adaptation)
  rest = {p: v for p, v in flat.items() if p not in mixture}
  traced = fn.trace(mixture, rest, {k: jnp.asarray(v) for k, v in b.items()},
                    Routing(expert=0))
  assert not [c for c in traced.jaxpr.consts if np.size(c) > 1]
