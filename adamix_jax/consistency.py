"""Consistency regularization between two stochastically routed passes.

AdaMix trains with `task_loss(pass_1) + lambda * consistency(pass_1, pass_2)`, the second
pass using an independent routing draw and dropout mask, so the experts learn to agree and
their average (the merged adapter) stays a good model. The trainer composes the loss; this
module only measures the disagreement.

Each direction treats the other pass's prediction as a fixed target (stop-gradient), as the
official code does with `.detach()`, so both passes receive a gradient, each pulled towards
the other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _weighted_mean(per_example: jax.Array, weights: jax.Array | None) -> jax.Array:
  """Mean over the batch axis (0) of per-example values; other axes are averaged first.

  With weights, rows of weight 0 (padding rows of an eval-style batch) do not count; a batch
  whose weights are all 0 gives 0.
  """
  if per_example.ndim > 1:
    per_example = per_example.reshape(per_example.shape[0], -1).mean(axis=1)
  if weights is None:
    return per_example.mean()
  weights = weights.astype(jnp.float32)
  return (per_example * weights).sum() / jnp.maximum(weights.sum(), 1e-12)


def symmetric_kl(logits_1: jax.Array, logits_2: jax.Array, *,
                 weights: jax.Array | None = None) -> jax.Array:
  """`½[KL(sg(p₂) ‖ p₁) + KL(sg(p₁) ‖ p₂)]` of the softmax over the last axis, batch mean.

  Computed in float32 from log-probabilities (no `log(softmax)` underflow). `sg` is
  stop-gradient: pass 1 is pulled towards pass 2's distribution and vice versa, but no
  gradient flows through either target. KL is summed over classes and averaged over the
  batch (torch's `KLDivLoss(reduction='batchmean')`); leading axes after the batch axis
  (e.g. sequence positions of MLM logits) are averaged.

  Args:
    logits_1: `[B, ..., C]` logits of the first pass.
    logits_2: same shape, second pass.
    weights: optional `[B]` example weights (0 for padding rows).

  Returns:
    A float32 scalar, 0 exactly when the two logits are equal.
  """
  if logits_1.shape != logits_2.shape:
    raise ValueError(f'Logit shapes differ: {logits_1.shape} vs {logits_2.shape}')
  log_p1 = jax.nn.log_softmax(logits_1.astype(jnp.float32), axis=-1)
  log_p2 = jax.nn.log_softmax(logits_2.astype(jnp.float32), axis=-1)
  target_1 = jax.lax.stop_gradient(log_p1)
  target_2 = jax.lax.stop_gradient(log_p2)
  kl_2_1 = jnp.sum(jnp.exp(target_2) * (target_2 - log_p1), axis=-1)  # KL(sg p2 || p1)
  kl_1_2 = jnp.sum(jnp.exp(target_1) * (target_1 - log_p2), axis=-1)  # KL(sg p1 || p2)
  return _weighted_mean(0.5 * (kl_2_1 + kl_1_2), weights)


def squared_difference(pred_1: jax.Array, pred_2: jax.Array, *,
                       weights: jax.Array | None = None) -> jax.Array:
  """`½[(y₁ - sg(y₂))² + (y₂ - sg(y₁))²]` = `(y₁ - y₂)²` in value, batch mean.

  The symmetric stop-gradient form mirrors `symmetric_kl`: each prediction is pulled
  towards the other by `(y_i - y_j)`, and no gradient flows through the targets.

  Args:
    pred_1: `[B]` or `[B, 1]` (or any `[B, ...]`) predictions of the first pass.
    pred_2: same shape, second pass.
    weights: optional `[B]` example weights.
  """
  if pred_1.shape != pred_2.shape:
    raise ValueError(f'Prediction shapes differ: {pred_1.shape} vs {pred_2.shape}')
  y1 = pred_1.astype(jnp.float32)
  y2 = pred_2.astype(jnp.float32)
  per_example = 0.5 * ((y1 - jax.lax.stop_gradient(y2))**2 +
                       (y2 - jax.lax.stop_gradient(y1))**2)
  if per_example.ndim == 0:
    raise ValueError('Predictions need a batch axis.')
  return _weighted_mean(per_example, weights)


def consistency_loss(logits_1: jax.Array, logits_2: jax.Array, *, regression: bool,
                     weights: jax.Array | None = None) -> jax.Array:
  """The disagreement between two routed passes: AdaMix's consistency regularizer.

  Classification: `symmetric_kl` of the predicted class distributions. Regression (STS-B):
  the mean squared difference of the two predictions. The official implementation applies
  the softmax KL to regression outputs too, but a softmax over a single output is the
  constant 1, so that KL is identically 0 and the regularizer silently does nothing; the
  squared difference is the natural analogue (the KL between two unit-variance Gaussians
  centred on the predictions is half of it).

  Args:
    logits_1: `[B, ..., C]` outputs of the first pass (`[B, 1]` or `[B]` for regression).
    logits_2: same shape, second pass (independent routing and dropout).
    regression: whether the outputs are regression predictions.
    weights: optional `[B]` example weights (0 for padding rows).

  Returns:
    A float32 scalar (multiply by lambda and add to the task loss of pass 1).
  """
  if regression:
    return squared_difference(logits_1, logits_2, weights=weights)
  return symmetric_kl(logits_1, logits_2, weights=weights)
