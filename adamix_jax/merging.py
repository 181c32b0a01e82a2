"""Merging a trained mixture of experts into one plain adapter (AdaMix's inference model).

After training, the E experts of every mixture projection are averaged into a single
projection: a tree-map mean over the leading expert axis of every stacked leaf. The result
has exactly the parameter tree of a plain adapter (or plain LoRA) model, the one
`adaptation.merged()` describes, so inference costs one adapter and loads into `Model` as
is. Options:

* Fisher-weighted averaging (`expert_weights`; the Fisher information comes from
  `adamix_jax.fisher`).
* AdaMix-LoRA: `mean_factors` (mean A times mean B, the official NLG behaviour) or
  `mean_delta` (the exact mean over experts of the updates A_k B_k), the latter as a rank
  E*r LoRA or, like any LoRA, folded into the frozen kernel (`fold_lora_into_kernels`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from adamix_jax.adapters import AdaptationConfig, is_mixture_leaf

Params = dict[str, Any]
Path = tuple[str, ...]
LORA_MERGES = ('mean_factors', 'mean_delta')


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
