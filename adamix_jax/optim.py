"""The optimizer: AdamW with linear warm-up and decay, and untouched unrouted experts.

A mixture leaf `[E, ...]` receives a gradient only in the slice of the expert that was
routed this step (the others' gradients are exactly zero). The official AdaMix code trains
with PyTorch's AdamW, which skips parameters without a gradient: their moments, weight decay
and value stay as they were. `skip_unrouted_experts` gives the same behaviour here; without
it Adam's momentum and the decoupled weight decay would keep moving experts that were not
selected. (One difference remains: optax keeps one step count for bias correction, PyTorch
one per parameter.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from adamix_jax import merging
from adamix_jax.adapters import AdaptationConfig

DECAYED_LEAVES = ('kernel', 'down_kernel', 'up_kernel', 'lora_a', 'lora_b')


def _dict_path(keypath) -> tuple[str, ...]:
  return tuple(k.key for k in keypath if isinstance(k, jax.tree_util.DictKey))


def skip_unrouted_experts(inner: optax.GradientTransformation, mixture_paths: set[tuple[str, ...]]
                          ) -> optax.GradientTransformation:
  """Wraps `inner` so that experts with an all-zero gradient keep their state and value.

  Args:
    inner: the optimizer.
    mixture_paths: parameter paths of the stacked `[E, ...]` leaves with more than one expert.
  """

  def init(params):
    return inner.init(params)

  def update(grads, state, params=None):
    updates, new_state = inner.update(grads, state, params)
    flat_grads = traverse_util.flatten_dict(grads)
    active = {p: jnp.any(g.reshape(g.shape[0], -1) != 0, axis=1)
              for p, g in flat_grads.items() if p in mixture_paths}

    def keep_inactive(keypath, new, old=None):
      path = _dict_path(keypath)
      if path not in active or getattr(new, 'ndim', 0) == 0 or new.shape[:1] != (
          active[path].shape[0],):
        return new
      mask = active[path].reshape((-1,) + (1,) * (new.ndim - 1))
      return jnp.where(mask, new, jnp.zeros_like(new) if old is None else old)

    updates = jax.tree_util.tree_map_with_path(keep_inactive, updates)
    new_state = jax.tree_util.tree_map_with_path(keep_inactive, new_state, state)
    return updates, new_state

  return optax.GradientTransformation(init, update)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   adaptation: AdaptationConfig | None = None, trainable: Any = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW, linear warm-up then linear decay, weight decay on kernels only; unrouted experts
  untouched when `adaptation` is a mixture (`trainable` gives the parameter paths)."""
  warmup = int(round(config.warmup_ratio * total_steps))
  schedule = optax.join_schedules([
      optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1)),
      optax.linear_schedule(config.learning_rate, 0.0, max(total_steps - warmup, 1)),
  ], [warmup])

  def decay_mask(params):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: k[-1] in DECAYED_LEAVES for k in flat})

  tx = optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                   weight_decay=config.weight_decay, mask=decay_mask)
  if config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  if adaptation is not None and adaptation.is_mixture and trainable is not None:
    paths = {p for p, leaf in merging.mixture_leaves(trainable, adaptation).items()
             if leaf.shape[0] > 1}
    tx = skip_unrouted_experts(tx, paths)
  return tx, schedule
