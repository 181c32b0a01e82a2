"""Inference modes of a mixture model: merged, random, expert=k and ensemble.

* merged (the default, and the one reported): the experts averaged into one adapter
  (`merging.merge_experts` / `merging.merged_model`); one adapter's cost.
* random: a fresh routing draw per batch, as in training (pass a new key per batch).
* expert: a fixed expert k for every projection (a shared side uses its single expert).
* ensemble: the average of the predicted probabilities (regression: predictions) of the E
  models `expert=0..E-1`; E times the cost.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adamix_jax.model import batch_inputs
from adamix_jax.routing import INFERENCE_MODES, Routing


def _outputs(model: nn.Module, params: Any, batch: dict[str, jax.Array], routing: Routing,
             regression: bool) -> jax.Array:
  logits = model.apply({'params': params}, *batch_inputs(batch), routing=routing,
                       deterministic=True)
  if regression:
    return logits[..., 0].astype(jnp.float32)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def predict(model: nn.Module, params: Any, batch: dict[str, jax.Array], *,
            mode: str = 'merged', key: jax.Array | None = None, expert: int | None = None,
            regression: bool | None = None) -> jax.Array:
  """Predicted class probabilities `[B, C]` (regression: predictions `[B]`) in one mode.

  Jit it with `mode`, `expert` and `regression` static (e.g. via `functools.partial`).

  Args:
    model: for 'merged' the plain model the experts were merged into; for the other modes
      the mixture model.
    params: the matching parameters.
    batch: 'input_ids' and optionally 'attention_mask', 'token_type_ids', 'mask_positions'.
    mode: one of `routing.INFERENCE_MODES`.
    key: the routing key ('random' only): draw a new one per batch.
    expert: the expert index ('expert' only).
    regression: whether outputs are regression predictions; default: a classifier head
      with one label.
  """
  if mode not in INFERENCE_MODES:
    raise ValueError(f'Unknown inference mode {mode!r}; supported: {INFERENCE_MODES}')
  if regression is None:
    regression = model.head == 'classifier' and model.num_labels == 1
  mixture = model.adaptation.is_mixture
  if mode == 'merged':
    if mixture:
      raise ValueError("mode='merged' runs the merged model: build it with "
                       'merging.merged_model(model, params) first.')
    return _outputs(model, params, batch, Routing(), regression)
  if not mixture:
    raise ValueError(f'mode={mode!r} needs a mixture model, got '
                     f'kind={model.adaptation.kind!r}.')
  if mode == 'random':
    if key is None:
      raise ValueError("mode='random' needs a routing key.")
    return _outputs(model, params, batch, Routing(key=key), regression)
  if mode == 'expert':
    if expert is None:
      raise ValueError("mode='expert' needs expert=k.")
    return _outputs(model, params, batch, Routing(expert=expert), regression)
  members = [_outputs(model, params, batch, Routing(expert=k), regression)
             for k in range(model.adaptation.num_experts)]
  return sum(members[1:], members[0]) / len(members)
