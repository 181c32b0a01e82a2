"""Merging a trained mixture of experts into one plain adapter (AdaMix's inference model).

After training, the E experts of every mixture projection are averaged into a single
projection: a tree-map mean over the leading expert axis of every stacked leaf. The result
has exactly the parameter tree of a plain adapter (or plain LoRA) model, the one
`adaptation.merged()` describes, so inference costs one adapter and loads into `Model` as
is. Options:

* Fisher-weighted averaging (Matena & Raffel, "Merging Models with Fisher-Weighted
  Averaging"): `sum_k F_k theta_k / sum_k F_k` per element, with `F_k` each expert's
  diagonal empirical Fisher (`diagonal_fisher`, `fisher_merge`).
* AdaMix-LoRA: `mean_factors` (mean A times mean B, the official NLG behaviour) or
  `mean_delta` (the exact mean over experts of the updates A_k B_k), the latter as a rank
  E*r LoRA or, like any LoRA, folded into the frozen kernel (`fold_lora_into_kernels`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from adamix_jax.adapters import AdaptationConfig, adaptation_param_kind
from adamix_jax.model import batch_inputs
from adamix_jax.routing import Routing

Params = dict[str, Any]
Path = tuple[str, ...]
LORA_MERGES = ('mean_factors', 'mean_delta')


def is_mixture_leaf(path: Path, adaptation: AdaptationConfig) -> bool:
  """Whether the leaf at `path` is stacked over experts (has a leading expert axis)."""
  kind = adaptation_param_kind(path)
  return ((adaptation.kind == 'adamix' and kind == 'adapter') or
          (adaptation.kind == 'adamix_lora' and kind == 'lora'))


def mixture_leaves(params: Params, adaptation: AdaptationConfig) -> dict[Path, Any]:
  """The stacked `[E, ...]` leaves of a mixture model, keyed by their flattened path."""
  return {path: leaf for path, leaf in traverse_util.flatten_dict(params).items()
          if is_mixture_leaf(path, adaptation)}


def _expert_mean(leaf: jax.Array, weights: jax.Array | None, epsilon: float) -> jax.Array:
  if leaf.shape[0] == 1:  # a shared side: nothing to average
    return leaf[0]
  if weights is None:
    return leaf.mean(axis=0)
  if weights.shape != leaf.shape:
    raise ValueError(f'expert_weights shape {weights.shape} != parameter shape {leaf.shape}')
  w = weights.astype(jnp.float32) + epsilon
  return ((w * leaf.astype(jnp.float32)).sum(axis=0) / w.sum(axis=0)).astype(leaf.dtype)


def _lora_as_rank_er(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`[E, d_in, r]`, `[E, r, d_out]` -> `[d_in, E*r]`, `[E*r, d_out]` with `A'B' = mean_k A_k B_k`.

  Expert k's A occupies columns `k*r .. k*r+r-1` of A' and its B (divided by E) the same
  rows of B', so the product sums exactly the E paired updates.
  """
  num, d_in, r = a.shape
  a_cat = jnp.moveaxis(a, 0, 1).reshape(d_in, num * r)
  b_cat = b.reshape(num * r, b.shape[-1]) / num
  return a_cat, b_cat


def merge_experts(params: Params, adaptation: AdaptationConfig, *,
                  lora_merge: str = 'mean_factors', expert_weights: Params | None = None,
                  fold_lora: bool = False,
                  epsilon: float = 1e-8) -> tuple[Params, AdaptationConfig]:
  """Averages every mixture leaf over its expert axis: the plain model inference runs.

  Bottleneck mixtures: each of down/up kernel/bias becomes the mean of its experts (a shared
  side, stored with E=1, is just unstacked). AdaMix-LoRA:
    * `mean_factors`: mean_k(A_k) and mean_k(B_k), a rank-r LoRA (the official NLG code).
      Under training-time routing A and B are drawn independently, so the expected update
      `E[A_i B_j]` is exactly `mean(A) mean(B)`: this merge is the mean routed update.
    * `mean_delta`: the exact mean over k of the paired updates `A_k B_k`. When either side
      is shared this equals `mean_factors` (a rank-r LoRA); otherwise it is returned as a
      rank-E*r LoRA (A's concatenated along the rank axis, B's stacked and divided by E),
      with `lora_rank = E*r` and `lora_alpha = E*alpha` so that the scale alpha/rank is
      unchanged.

  Args:
    params: parameters of a model built with `adaptation` (arrays or ShapeDtypeStructs under
      `jax.eval_shape`).
    adaptation: the mixture configuration the params were trained with. A non-mixture one
      returns the params unchanged (or only folded, with `fold_lora`).
    lora_merge: 'mean_factors' or 'mean_delta' (AdaMix-LoRA only).
    expert_weights: optional per-element weights for each mixture leaf (same shapes, e.g. the
      Fisher from `diagonal_fisher`), keyed like `params` (other leaves may be absent). The
      merge is then `sum_k (w_k + eps) theta_k / sum_k (w_k + eps)`: elements no expert's
      weight sees fall back to the plain mean. Not combinable with an exact `mean_delta`.
    fold_lora: also fold the merged LoRA into the frozen kernels (`fold_lora_into_kernels`)
      for zero-overhead serving.
    epsilon: added to every weight (only with `expert_weights`).

  Returns:
    `(merged_params, merged_adaptation)`: the tree a `Model(config, merged_adaptation)`
    loads.
  """
  if lora_merge not in LORA_MERGES:
    raise ValueError(f'Unknown lora_merge {lora_merge!r}; supported: {LORA_MERGES}')
  if not adaptation.is_mixture:
    if fold_lora and adaptation.uses_lora:
      return fold_lora_into_kernels(params, adaptation)
    return params, adaptation
  flat = traverse_util.flatten_dict(params)
  weights = traverse_util.flatten_dict(expert_weights) if expert_weights is not None else None
  merged_adaptation = adaptation.merged()
  exact_delta = (adaptation.kind == 'adamix_lora' and lora_merge == 'mean_delta' and
                 adaptation.experts('down') > 1 and adaptation.experts('up') > 1)
  if exact_delta and weights is not None:
    raise ValueError("expert_weights merge each leaf separately; with lora_merge='mean_delta' "
                     'and no shared side use the plain mean.')
  out = {}
  for path, leaf in flat.items():
    if not is_mixture_leaf(path, adaptation):
      out[path] = leaf
    elif exact_delta:
      if path[-1] == 'lora_a':
        out[path], out[path[:-1] + ('lora_b',)] = _lora_as_rank_er(
            leaf, flat[path[:-1] + ('lora_b',)])
    else:
      if weights is not None and path not in weights:
        raise ValueError(f'expert_weights has no entry for {"/".join(path)}')
      out[path] = _expert_mean(leaf, None if weights is None else weights[path], epsilon)
  if exact_delta:
    num = adaptation.num_experts
    merged_adaptation = dataclasses.replace(merged_adaptation,
                                            lora_rank=num * adaptation.lora_rank,
                                            lora_alpha=num * adaptation.lora_alpha)
  merged = traverse_util.unflatten_dict(out)
  if fold_lora:
    return fold_lora_into_kernels(merged, merged_adaptation)
  return merged, merged_adaptation


def fold_lora_into_kernels(params: Params,
                           adaptation: AdaptationConfig) -> tuple[Params, AdaptationConfig]:
  """`kernel + A B * alpha / r` for every plain LoRA projection; the LoRA leaves are dropped.

  The result is a plain (kind='none') model's tree: serving costs nothing extra.

  Args:
    params: parameters of a plain LoRA model (merge a mixture with `merge_experts` first).
    adaptation: its configuration (kind 'lora').

  Returns:
    `(params without lora_a/lora_b, adaptation with kind='none')`.
  """
  if adaptation.kind != 'lora':
    raise ValueError(f"fold_lora_into_kernels needs a plain LoRA model (kind='lora'), got "
                     f'{adaptation.kind!r}; merge the experts of a mixture first.')
  scale = adaptation.lora_alpha / adaptation.lora_rank
  flat = traverse_util.flatten_dict(params)
  out = {}
  for path, leaf in flat.items():
    if path[-1] in ('lora_a', 'lora_b'):
      continue
    parent = path[:-1]
    if path[-1] == 'kernel' and parent + ('lora_a',) in flat:
      a, b = flat[parent + ('lora_a',)], flat[parent + ('lora_b',)]
      delta = jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32),
                         precision=jax.lax.Precision.HIGHEST)
      leaf = (leaf.astype(jnp.float32) + delta * scale).astype(leaf.dtype)
    out[path] = leaf
  return traverse_util.unflatten_dict(out), dataclasses.replace(adaptation, kind='none')


def merged_model(model: nn.Module, params: Params, **merge_kwargs) -> tuple[nn.Module, Params]:
  """`merge_experts` applied to a model: the plain model and its parameters."""
  merged, adaptation = merge_experts(params, model.adaptation, **merge_kwargs)
  return model.clone(adaptation=adaptation), merged


# --------------------------------------------------------------------------------------
# Fisher-weighted merging.
# --------------------------------------------------------------------------------------

LogLikelihood = Callable[[Params, dict[str, jax.Array], Routing], jax.Array]


@functools.lru_cache(maxsize=32)  # one function per model: its compiled Fisher is reused
def log_likelihood_fn(model: nn.Module, *, regression: bool) -> LogLikelihood:
  """`(params, batch, routing) -> [B]` log-likelihood of each example's observed label.

  Classification: `log softmax(logits)[label]`. Regression: a unit-variance Gaussian,
  `-(prediction - label)^2 / 2` (up to a constant, which has no gradient). Dropout is off.
  """

  def fn(params, batch, routing):
    logits = model.apply({'params': params}, *batch_inputs(batch), routing=routing,
                         deterministic=True)
    if regression:
      return -0.5 * (logits[..., 0] - batch['labels'].astype(jnp.float32))**2
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    labels = batch['labels'].astype(jnp.int32)
    return jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]

  return fn


@functools.lru_cache(maxsize=32)
def _squared_grads_fn(log_likelihood: LogLikelihood):
  """`(mixture, rest, batch, routing) -> (sum of squared per-example gradients of the
  mixture leaves, number of examples)`, jitted once per log-likelihood function. The other
  parameters are an argument, not constants baked into the compiled program."""

  def example_log_likelihood(mix, rest, example, routing):
    batch = jax.tree_util.tree_map(lambda x: x[None], example)
    full = traverse_util.unflatten_dict({**rest, **mix})
    return log_likelihood(full, batch, routing)[0]

  @jax.jit
  def squared_grads(mix, rest, batch, routing):
    weights = batch.pop('weights', None)
    grads = jax.vmap(jax.grad(example_log_likelihood), in_axes=(None, None, 0, None))(
        mix, rest, batch, routing)
    if weights is None:
      weights = jnp.ones(batch['labels'].shape[:1], jnp.float32)
    weights = weights.astype(jnp.float32)
    sums = jax.tree_util.tree_map(
        lambda g: jnp.tensordot(weights, g.astype(jnp.float32)**2, axes=1), grads)
    return sums, weights.sum()

  return squared_grads


def diagonal_fisher(log_likelihood: LogLikelihood, params: Params,
                    adaptation: AdaptationConfig,
                    batches: Iterable[dict[str, Any]]) -> Params:
  """Each expert's diagonal empirical Fisher, for every mixture leaf.

  For expert k the model is run with `Routing(expert=k)` (every multi-expert projection uses
  expert k; a shared side uses its single expert), and `F_k = mean_i (d log p(y_i|x_i) /
  d theta_k)^2` over the examples, from per-example gradients (the square of a batch-mean
  gradient would be a different, biased quantity). With that routing only slice k of a
  stacked leaf gets a gradient, so slice k of the result is expert k's Fisher; a shared leaf
  gets the average over the E routed models.

  Args:
    log_likelihood: `(params, batch, routing) -> [B]`, e.g. `log_likelihood_fn(model, ...)`.
    params: the trained mixture parameters.
    adaptation: their (mixture) configuration.
    batches: batches with the model inputs and 'labels'; an optional 'weights' [B] (0 for
      padding rows) excludes examples.

  Returns:
    A nested dict holding, for every mixture leaf, a float32 array of the leaf's shape.
  """
  if not adaptation.is_mixture:
    raise ValueError(f'diagonal_fisher needs a mixture model, got kind={adaptation.kind!r}')
  flat = traverse_util.flatten_dict(params)
  mixture = {p: v for p, v in flat.items() if is_mixture_leaf(p, adaptation)}
  rest = {p: v for p, v in flat.items() if p not in mixture}
  squared_grads = _squared_grads_fn(log_likelihood)

  totals = jax.tree_util.tree_map(lambda v: jnp.zeros(v.shape, jnp.float32), mixture)
  count = 0.0
  num_batches = 0
  for batch in batches:
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    num_batches += 1
    for k in range(adaptation.num_experts):
      sums, n = squared_grads(mixture, rest, dict(batch), Routing(expert=k))
      totals = jax.tree_util.tree_map(jnp.add, totals, sums)
      if k == 0:
        count += float(n)
  if not num_batches or count <= 0:
    raise ValueError('diagonal_fisher got no (non-padding) examples.')
  # Slice k of a stacked leaf got gradients from run k only; a shared leaf from all E runs.
  fisher = {p: v / (count * (adaptation.num_experts // mixture[p].shape[0]))
            for p, v in totals.items()}
  return traverse_util.unflatten_dict(fisher)


def fisher_merge(model: nn.Module, params: Params, batches: Iterable[dict[str, Any]], *,
                 regression: bool, num_batches: int | None = None, epsilon: float = 1e-8,
                 fold_lora: bool = False) -> tuple[Params, AdaptationConfig]:
  """Fisher-weighted merge of a trained mixture model, from a few (training) batches.

  Args:
    model: the mixture `Model`.
    params: its trained parameters.
    batches: batches of model inputs with 'labels' (and optional 'weights').
    regression: whether the head is a regression head (Gaussian likelihood).
    num_batches: use at most this many batches (None: all of `batches`).
    epsilon: see `merge_experts`.
    fold_lora: see `merge_experts`.

  Returns:
    `(merged_params, merged_adaptation)`, as `merge_experts`.
  """
  batches = itertools.islice(batches, num_batches)
  fisher = diagonal_fisher(log_likelihood_fn(model, regression=regression), params,
                           model.adaptation, batches)
  return merge_experts(params, model.adaptation, expert_weights=fisher, epsilon=epsilon,
                       fold_lora=fold_lora)
