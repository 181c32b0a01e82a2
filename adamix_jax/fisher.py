"""Fisher-weighted merging of a trained mixture (Matena & Raffel, "Merging Models with
Fisher-Weighted Averaging"): `sum_k F_k theta_k / sum_k F_k` per element, with `F_k` each
expert's diagonal empirical Fisher, estimated from per-example gradients of the model's
log-likelihood on a few batches."""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from adamix_jax.adapters import AdaptationConfig, is_mixture_leaf
from adamix_jax.merging import merge_experts
from adamix_jax.model import batch_inputs
from adamix_jax.routing import Routing

Params = dict[str, Any]

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
