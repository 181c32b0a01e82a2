"""Bottleneck adapters and LoRA, each as a plain module and as a mixture of experts.

A mixture stores its E experts as stacked arrays (`[E, d, r]` kernels, `[E, r]` biases) and,
on each forward pass, uses one expert per projection chosen by `routing.expert_index`: the
compute is exactly one adapter's. Parameter names are the same with and without the expert
axis, so merging a mixture (a mean over axis 0, `merging.merge_experts`) yields the exact
parameter tree of the plain module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp

from adamix_jax import routing as routing_lib
from adamix_jax.routing import Routing

KINDS = ('none', 'adapter', 'adamix', 'lora', 'adamix_lora')
PLACEMENTS = ('ffn', 'houlsby')
LORA_TARGETS = ('query', 'key', 'value', 'attention_output', 'intermediate', 'output')

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'gelu': lambda x: nn.gelu(x, approximate=False),
    'gelu_new': lambda x: nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: nn.gelu(x, approximate=True),
    'relu': nn.relu,
    'silu': nn.silu,
    'swish': nn.silu,
    'tanh': jnp.tanh,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f'Unknown activation {name!r}; supported: {sorted(ACTIVATIONS)}') from None


@dataclasses.dataclass(frozen=True)
class AdaptationConfig:
  """What the frozen encoder is adapted with (hashable: it is a static module attribute).

  Attributes:
    kind: 'none', 'adapter' (one bottleneck adapter), 'adamix' (mixture of bottleneck
      adapters), 'lora' or 'adamix_lora' (mixture of LoRA experts).
    adapter_size: bottleneck width r.
    placement: 'ffn' (after the feed-forward output projection: AdaMix / Pfeiffer) or
      'houlsby' (after the attention output projection and after the feed-forward one).
    adapter_activation: the bottleneck non-linearity.
    num_experts: E, for the mixture kinds.
    share_up / share_down: that projection is one expert shared by all (AdaMix's official
      setting shares the up projection).
    zero_init_up: initialise the bottleneck up projection to zero so training starts at the
      identity; otherwise normal(0, init_std) as in the official AdaMix code. (LoRA's B is
      always zero-initialised, as in LoRA.)
    init_std: standard deviation of the adapter kernels' normal initialiser.
    lora_rank / lora_alpha / lora_dropout / lora_targets: LoRA hyper-parameters; the update
      is scaled by lora_alpha / lora_rank.
  """

  kind: str = 'none'
  adapter_size: int = 16
  placement: str = 'ffn'
  adapter_activation: str = 'gelu'
  num_experts: int = 4
  share_up: bool = True
  share_down: bool = False
  zero_init_up: bool = False
  init_std: float = 0.02
  lora_rank: int = 8
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0
  lora_targets: tuple[str, ...] = ('query', 'value')

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'Unknown adaptation kind {self.kind!r}; supported: {KINDS}')
    if self.placement not in PLACEMENTS:
      raise ValueError(f'Unknown adapter placement {self.placement!r}; supported: {PLACEMENTS}')
    activation(self.adapter_activation)
    if self.is_mixture and self.num_experts < 1:
      raise ValueError(f'num_experts must be >= 1, got {self.num_experts}')
    if self.uses_lora:
      if self.lora_rank < 1:
        raise ValueError(f'lora_rank must be >= 1, got {self.lora_rank}')
      unknown = set(self.lora_targets) - set(LORA_TARGETS)
      if unknown or not self.lora_targets:
        raise ValueError(
            f'lora_targets {tuple(self.lora_targets)} invalid; choose from {LORA_TARGETS}')
    if self.uses_bottleneck and self.adapter_size < 1:
      raise ValueError(f'adapter_size must be >= 1, got {self.adapter_size}')

  def to_json(self) -> dict[str, Any]:
    """The fields as JSON values (tuples as lists); `AdaptationConfig(**d)` reads it back."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  @property
  def is_mixture(self) -> bool:
    return self.kind in ('adamix', 'adamix_lora')

  @property
  def uses_bottleneck(self) -> bool:
    return self.kind in ('adapter', 'adamix')

  @property
  def uses_lora(self) -> bool:
    return self.kind in ('lora', 'adamix_lora')

  @property
  def adapter_sites(self) -> tuple[str, ...]:
    if not self.uses_bottleneck:
      return ()
    return ('attention', 'ffn') if self.placement == 'houlsby' else ('ffn',)

  def experts(self, side: str) -> int:
    """Number of experts stored for one side ('up' or 'down'; LoRA: B is up, A is down)."""
    if not self.is_mixture:
      return 1
    shared = self.share_up if side == 'up' else self.share_down
    return 1 if shared else self.num_experts

  def merged(self) -> 'AdaptationConfig':
    """The plain (single-expert) configuration the merged parameters load into."""
    plain = {'adamix': 'adapter', 'adamix_lora': 'lora'}.get(self.kind, self.kind)
    return dataclasses.replace(self, kind=plain)


ADAPTER_MODULE = 'adapter'  # the module name of every bottleneck adapter in the tree
LORA_PARAMS = ('lora_a', 'lora_b')


def adaptation_param_kind(path: tuple[str, ...]) -> str | None:
  """'adapter' or 'lora' for a parameter added by the adaptation, None for any other.

  Args:
    path: the parameter's key path in the (flattened) parameter tree.
  """
  if ADAPTER_MODULE in path[:-1]:
    return 'adapter'
  if path and path[-1] in LORA_PARAMS:
    return 'lora'
  return None


def _normal(std: float):
  return nn.initializers.normal(stddev=std)


def _stacked(init, num: int | None):
  """An initialiser for `[num, ...]` whose slices are independent draws of `init`."""
  if num is None:
    return init

  def init_fn(key, shape, dtype=jnp.float32):
    keys = jax.random.split(key, shape[0])
    return jax.vmap(lambda k: init(k, shape[1:], dtype))(keys)

  return init_fn


class BottleneckAdapter(nn.Module):
  """`h + up(act(down(h)))`, one adapter or a routed mixture of `[E, ...]` experts.

  Attributes:
    config: the adaptation config (size, activation, experts, sharing, init).
    layer: the encoder layer index (for the routing key).
    site: 'attention' or 'ffn' (for the routing key).
    dtype: compute dtype.
  """

  config: AdaptationConfig
  layer: int
  site: str
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, routing: Routing) -> jax.Array:
    cfg = self.config
    d, r = h.shape[-1], cfg.adapter_size
    mixture = cfg.kind == 'adamix'
    e_down = cfg.experts('down') if mixture else None
    e_up = cfg.experts('up') if mixture else None
    lead_down = (e_down,) if mixture else ()
    lead_up = (e_up,) if mixture else ()
    up_init = nn.initializers.zeros if cfg.zero_init_up else _normal(cfg.init_std)
    down_kernel = self.param('down_kernel', _stacked(_normal(cfg.init_std), e_down),
                             lead_down + (d, r))
    down_bias = self.param('down_bias', nn.initializers.zeros, lead_down + (r,))
    up_kernel = self.param('up_kernel', _stacked(up_init, e_up), lead_up + (r, d))
    up_bias = self.param('up_bias', nn.initializers.zeros, lead_up + (d,))
    if mixture:
      i_down = routing_lib.expert_index(routing, e_down, layer=self.layer, site=self.site,
                                        projection='down')
      i_up = routing_lib.expert_index(routing, e_up, layer=self.layer, site=self.site,
                                      projection='up')
      down_kernel = routing_lib.select_expert(down_kernel, i_down)
      down_bias = routing_lib.select_expert(down_bias, i_down)
      up_kernel = routing_lib.select_expert(up_kernel, i_up)
      up_bias = routing_lib.select_expert(up_bias, i_up)
    x = h.astype(self.dtype)
    z = x @ down_kernel.astype(self.dtype) + down_bias.astype(self.dtype)
    z = activation(cfg.adapter_activation)(z)
    z = z @ up_kernel.astype(self.dtype) + up_bias.astype(self.dtype)
    return h + z.astype(h.dtype)


def _kaiming_uniform_a(key, shape, dtype=jnp.float32):
  # PEFT initialises A like torch.nn.Linear (kaiming uniform, a=sqrt(5)): bound 1/sqrt(fan_in).
  bound = 1.0 / jnp.sqrt(shape[-2])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class LoRADense(nn.Module):
  """A frozen Dense layer, optionally with a LoRA update (plain or a mixture of experts).

  Parameters `kernel`/`bias` are the pretrained projection; `lora_a` `[(E,) d_in, r]` and
  `lora_b` `[(E,) r, d_out]` the low-rank update, scaled by alpha / r:
  `y = x W + b + (dropout(x) A B) * alpha / r`.
  """

  features: int
  config: AdaptationConfig | None = None
  layer: int = 0
  site: str = ''
  dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, x: jax.Array, routing: Routing, deterministic: bool = True) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    y = x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)
    cfg = self.config
    if cfg is None or not cfg.uses_lora or self.site not in cfg.lora_targets:
      return y
    mixture = cfg.kind == 'adamix_lora'
    e_a = cfg.experts('down') if mixture else None
    e_b = cfg.experts('up') if mixture else None
    lead_a = (e_a,) if mixture else ()
    lead_b = (e_b,) if mixture else ()
    # LoRA starts at the identity: B = 0 for every expert, A drawn independently per expert.
    b_init = nn.initializers.zeros
    a = self.param('lora_a', _stacked(_kaiming_uniform_a, e_a), lead_a + (x.shape[-1],
                                                                          cfg.lora_rank))
    b = self.param('lora_b', _stacked(b_init, e_b), lead_b + (cfg.lora_rank, self.features))
    if mixture:
      a = routing_lib.select_expert(a, routing_lib.expert_index(
          routing, e_a, layer=self.layer, site=self.site, projection='lora_a'))
      b = routing_lib.select_expert(b, routing_lib.expert_index(
          routing, e_b, layer=self.layer, site=self.site, projection='lora_b'))
    h = nn.Dropout(cfg.lora_dropout)(x, deterministic=deterministic)
    update = (h.astype(self.dtype) @ a.astype(self.dtype)) @ b.astype(self.dtype)
    return y + update * (cfg.lora_alpha / cfg.lora_rank)


def is_mixture_leaf(path: tuple[str, ...], adaptation: AdaptationConfig) -> bool:
  """Whether the leaf at `path` is stacked over experts (has a leading expert axis)."""
  kind = adaptation_param_kind(path)
  return ((adaptation.kind == 'adamix' and kind == 'adapter') or
          (adaptation.kind == 'adamix_lora' and kind == 'lora'))


def mixture_leaves(params: Any, adaptation: AdaptationConfig) -> dict[tuple[str, ...], Any]:
  """The stacked `[E, ...]` leaves of a mixture model, keyed by their flattened path."""
  return {path: leaf for path, leaf in traverse_util.flatten_dict(params).items()
          if is_mixture_leaf(path, adaptation)}
