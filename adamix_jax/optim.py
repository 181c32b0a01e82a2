"""The optimizer: AdamW with linear warm-up and decay, and how experts that were not routed
on a step are updated (`config.expert_updates`).

A mixture leaf `[E, ...]` receives a gradient only in the slices of the experts routed this
step (the others' gradients are exactly zero). What the optimizer does with the others:

- `official` (default): what the official AdaMix training loop does when run (microsoft/
  AdaMix: a fork of transformers 4.4.2, its `Trainer`, torch 1.9). Each expert is its own
  tensor there. Its `.grad` is None until it is routed for the first time, and
  transformers' `AdamW` skips it; after every step `Trainer` calls `model.zero_grad()`,
  which in torch 1.x keeps `.grad` as a zero tensor, so from its first routing on the
  expert is updated on **every** step: with a zero gradient its first moment decays but
  still moves it, and the decoupled weight decay applies. Each expert has its own step count
  (its bias correction starts at its first routing). The update is transformers 4.4.2's
  `AdamW`: `denom = sqrt(v) + eps`, both bias corrections folded into the step size
  `lr * sqrt(1 - b2^t) / (1 - b1^t)`, then weight decay `p -= lr * wd * p` on the updated
  value; gradients are clipped as `torch.nn.utils.clip_grad_norm_` does. Every method
  trains with this formula in this mode (the official baselines ran the same `Trainer`).
- `frozen`: an expert's value and Adam moments stay untouched on the steps it is not routed
  (optax's AdamW, one step count).
- `dense`: optax's AdamW over the stacked arrays from step 0 (every expert's moments and
  decay move on every step).

Which experts were routed is read from the gradient: an expert whose gradient slice has a
non-zero element. A routed expert whose whole gradient is exactly zero (a LoRA A expert
while every B is still at its zero initialisation) is taken as not yet routed; under
`official` that only delays the start of its step count.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from adamix_jax.adapters import AdaptationConfig, mixture_leaves

EXPERT_UPDATES = ('official', 'frozen', 'dense')
# optax's AdamW (frozen / dense) decays these leaves.
DECAYED_LEAVES = ('kernel', 'down_kernel', 'up_kernel', 'lora_a', 'lora_b')
LAYER_NORMS = ('LayerNorm', 'layer_norm')

Path = tuple[str, ...]


def _dict_path(keypath) -> Path:
  return tuple(k.key for k in keypath if isinstance(k, jax.tree_util.DictKey))


def is_decayed(path: Path, expert_updates: str = 'official') -> bool:
  """Whether weight decay applies to a parameter.

  `official`: transformers' `Trainer.create_optimizer` decays every parameter outside a
  LayerNorm whose name has no 'bias' (embeddings included). `frozen` / `dense`: kernels
  only.
  """
  if expert_updates == 'official':
    return not any(n in LAYER_NORMS for n in path[:-1]) and 'bias' not in path[-1]
  return path[-1] in DECAYED_LEAVES


def routed_experts(grad: jax.Array) -> jax.Array:
  """`[E]` booleans: the experts of a stacked leaf whose gradient slice is not all zero."""
  return jnp.any(grad.reshape(grad.shape[0], -1) != 0, axis=1)


def _per_expert(vector: jax.Array, like: jax.Array) -> jax.Array:
  """An `[E]` vector shaped to broadcast against an `[E, ...]` leaf."""
  return vector.reshape(vector.shape + (1,) * (like.ndim - vector.ndim))


# --------------------------------------------------------------------------------------
# expert_updates = 'official'
# --------------------------------------------------------------------------------------


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
  """`torch.nn.utils.clip_grad_norm_`: scale by `max_norm / (norm + 1e-6)` when that is < 1."""

  def update(updates, state, params=None):
    del params
    norm = optax.global_norm(updates)
    coef = max_norm / (norm + 1e-6)
    scale = jnp.where(coef < 1.0, coef, 1.0)
    return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class OfficialAdamWState(NamedTuple):
  step: jax.Array  # optimizer steps taken (selects the learning rate)
  counts: Any  # per leaf: each expert's own Adam step count `[E]`, or one count `()`
  mu: Any
  nu: Any


def official_adamw(learning_rate: optax.ScalarOrSchedule, *, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   decay: Callable[[Path], bool] | None = None,
                   expert_paths: set[Path] = frozenset()) -> optax.GradientTransformation:
  """transformers 4.4.2's `AdamW`, with per-expert state for stacked mixture leaves.

  Args:
    learning_rate: a float or a schedule of the optimizer step.
    b1, b2, eps: Adam's coefficients (eps is added to `sqrt(v)`, before bias correction).
    weight_decay: decoupled decay `p -= lr * weight_decay * p`, after the Adam update.
    decay: which parameter paths decay (default: `is_decayed`).
    expert_paths: paths of the stacked `[E, ...]` leaves with E > 1. Each expert's moments
      and step count start at its first routing and move on every step after it.
  """
  decay = decay or is_decayed
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
  # Computed in double precision like torch's Python scalars (1 - 0.999 in float32 is off by
  # 1.3e-5 relative), then used in float32.
  one_minus_b1, one_minus_b2 = 1.0 - b1, 1.0 - b2
  log_b1, log_b2 = math.log1p(-one_minus_b1), math.log1p(-one_minus_b2)

  def init(params):
    def count(keypath, p):
      path = _dict_path(keypath)
      return jnp.zeros(p.shape[:1] if path in expert_paths else (), jnp.int32)

    zeros = lambda p: jnp.zeros_like(p)
    return OfficialAdamWState(step=jnp.zeros((), jnp.int32),
                              counts=jax.tree_util.tree_map_with_path(count, params),
                              mu=jax.tree_util.tree_map(zeros, params),
                              nu=jax.tree_util.tree_map(zeros, params))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError('official_adamw needs the parameters (weight decay applies to them).')
    lr = jnp.asarray(schedule(state.step), jnp.float32)
    flat_g, treedef = jax.tree_util.tree_flatten_with_path(grads)
    leaves = zip(flat_g, treedef.flatten_up_to(state.counts), treedef.flatten_up_to(state.mu),
                 treedef.flatten_up_to(state.nu), treedef.flatten_up_to(params))
    out_u, out_c, out_m, out_v = [], [], [], []
    for (keypath, g), count, m, v, p in leaves:
      path = _dict_path(keypath)
      if path in expert_paths:
        started = (count > 0) | routed_experts(g)
        active = _per_expert(started, g)
      else:
        started = jnp.ones((), bool)
        active = True
      count = count + started.astype(count.dtype)
      m = jnp.where(active, b1 * m + one_minus_b1 * g, m)
      v = jnp.where(active, b2 * v + one_minus_b2 * g * g, v)
      t = _per_expert(jnp.maximum(count, 1).astype(jnp.float32), g)
      correction1 = -jnp.expm1(t * log_b1)  # 1 - b1^t
      correction2 = -jnp.expm1(t * log_b2)  # 1 - b2^t
      step_size = lr * jnp.sqrt(correction2) / correction1
      u = -step_size * m / (jnp.sqrt(v) + eps)
      if weight_decay > 0 and decay(path):
        u = u - lr * weight_decay * (p + u)
      u = jnp.where(active, u, 0).astype(p.dtype)
      out_u.append(u)
      out_c.append(count)
      out_m.append(m)
      out_v.append(v)
    unflatten = lambda xs: jax.tree_util.tree_unflatten(treedef, xs)
    return unflatten(out_u), OfficialAdamWState(step=state.step + 1, counts=unflatten(out_c),
                                                mu=unflatten(out_m), nu=unflatten(out_v))

  return optax.GradientTransformation(init, update)


# --------------------------------------------------------------------------------------
# expert_updates = 'frozen'
# --------------------------------------------------------------------------------------


def skip_unrouted_experts(inner: optax.GradientTransformation, mixture_paths: set[Path]
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
    active = {p: routed_experts(g) for p, g in flat_grads.items() if p in mixture_paths}

    def keep_inactive(keypath, new, old=None):
      path = _dict_path(keypath)
      if path not in active or getattr(new, 'ndim', 0) == 0 or new.shape[:1] != (
          active[path].shape[0],):
        return new
      mask = _per_expert(active[path], new)
      return jnp.where(mask, new, jnp.zeros_like(new) if old is None else old)

    updates = jax.tree_util.tree_map_with_path(keep_inactive, updates)
    new_state = jax.tree_util.tree_map_with_path(keep_inactive, new_state, state)
    return updates, new_state

  return optax.GradientTransformation(init, update)


# --------------------------------------------------------------------------------------
# The run's optimizer
# --------------------------------------------------------------------------------------


def make_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up over `ceil(warmup_ratio * total_steps)` steps (transformers'
  `Trainer`), then linear decay to 0 at `total_steps`."""
  warmup = math.ceil(config.warmup_ratio * total_steps)
  return optax.join_schedules([
      optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1)),
      optax.linear_schedule(config.learning_rate, 0.0, max(total_steps - warmup, 1)),
  ], [warmup])


def expert_paths(trainable: Any, adaptation: AdaptationConfig | None) -> set[Path]:
  """Paths of the stacked mixture leaves with more than one expert."""
  if adaptation is None or not adaptation.is_mixture or trainable is None:
    return set()
  return {p for p, leaf in mixture_leaves(trainable, adaptation).items()
          if leaf.shape[0] > 1}


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   adaptation: AdaptationConfig | None = None, trainable: Any = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The run's optimizer and learning-rate schedule (see the module docstring).

  `adaptation` and `trainable` (the trainable parameters) locate the mixture leaves.
  """
  mode = config.get('expert_updates', 'official')
  if mode not in EXPERT_UPDATES:
    raise ValueError(f'config.expert_updates={mode!r}: choose {", ".join(EXPERT_UPDATES)}')
  schedule = make_schedule(config, total_steps)
  paths = expert_paths(trainable, adaptation)
  if mode == 'official':
    tx = official_adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                        weight_decay=config.weight_decay, expert_paths=paths)
    if config.grad_clip_norm > 0:
      tx = optax.chain(clip_by_global_norm_torch(config.grad_clip_norm), tx)
    return tx, schedule

  def decay_mask(params):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: is_decayed(k, mode) for k in flat})

  tx = optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                   weight_decay=config.weight_decay, mask=decay_mask)
  if config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  if mode == 'frozen' and paths:
    tx = skip_unrouted_experts(tx, paths)
  return tx, schedule
