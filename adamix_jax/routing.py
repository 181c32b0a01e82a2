"""Stochastic routing: which adapter expert each layer uses on a training step.

AdaMix picks, every step, one expert for every projection of every adapter site, and the
whole batch uses that pick. The pick is a pure function of the step's PRNG key and static
ids (layer, site, projection), so every device of a data-parallel or multi-host run draws
the same expert without communicating, and a run is reproducible from (seed, step).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

# Static ids folded into the routing key. They are part of the reproducibility contract:
# changing them changes which expert a given (seed, step) selects.
SITES = {
    'attention': 0,  # bottleneck adapter after the attention output projection
    'ffn': 1,  # bottleneck adapter after the feed-forward output projection
    'query': 2,  # LoRA on the attention projections
    'key': 3,
    'value': 4,
    'attention_output': 5,
    'intermediate': 6,
    'output': 7,
}
PROJECTIONS = {'down': 0, 'up': 1, 'lora_a': 2, 'lora_b': 3}

INFERENCE_MODES = ('merged', 'random', 'expert', 'ensemble')


@dataclasses.dataclass(frozen=True)
class Routing:
  """How mixture modules choose their expert on one forward pass.

  Attributes:
    key: a PRNG key; each projection draws its expert uniformly from it (training, and the
      `random` inference mode). Folded with the layer, site and projection ids.
    expert: a fixed expert index used by every projection (the `expert=k` inference mode
      and each member of the `ensemble` mode). A side with a single shared expert uses 0.
  Exactly one of the two is set when a model holds mixtures; a model whose experts were
  merged into plain adapters needs neither.
  """

  key: Any = None
  expert: int | None = None

  def __post_init__(self):
    if self.key is not None and self.expert is not None:
      raise ValueError('Routing takes a key (random routing) or an expert index, not both.')


jax.tree_util.register_dataclass(Routing, data_fields=['key'], meta_fields=['expert'])


def route_key(key: jax.Array, *, layer: int, site: str, projection: str) -> jax.Array:
  """The key one projection of one adapter site draws its expert from."""
  key = jax.random.fold_in(key, layer)
  key = jax.random.fold_in(key, SITES[site])
  return jax.random.fold_in(key, PROJECTIONS[projection])


def expert_index(routing: Routing, num_experts: int, *, layer: int, site: str,
                 projection: str) -> jax.Array | int:
  """The expert index a projection uses: drawn uniformly, fixed, or 0 for a shared side."""
  if num_experts == 1:
    return 0
  if routing.expert is not None:
    if not 0 <= routing.expert < num_experts:
      raise ValueError(
          f'expert={routing.expert} is out of range: the {projection} projection at layer '
          f'{layer} ({site}) has {num_experts} experts.')
    return routing.expert
  if routing.key is None:
    raise ValueError(
        f'Layer {layer} ({site}) holds a mixture of {num_experts} {projection} experts but '
        'no routing was given: pass Routing(key=...) for random routing, '
        'Routing(expert=k) for a fixed expert, or merge the experts first '
        '(adamix_jax.merging.merge_experts).')
  return jax.random.randint(
      route_key(routing.key, layer=layer, site=site, projection=projection), (), 0,
      num_experts)


def select_expert(stacked: jax.Array, index: jax.Array | int) -> jax.Array:
  """One expert's slice of a stacked `[E, ...]` array.

  A dynamic index (not a one-hot mix) so the unselected experts cost no FLOPs and get
  exactly-zero gradients.
  """
  if isinstance(index, int):
    return stacked[index]
  return jax.lax.dynamic_index_in_dim(stacked, index, axis=0, keepdims=False)
