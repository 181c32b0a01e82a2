"""The frozen BERT/RoBERTa encoder in Flax Linen, with adapter slots in every layer.

One implementation serves both families: they differ only in how position ids are made
(RoBERTa derives them from the non-padding tokens, offset by `padding_idx + 1`) and in
their heads. Parameter names follow the Hugging Face module names (`encoder/layer_3/
attention/self/query/kernel`), so `hf_checkpoint` maps checkpoints in and out by rule.

Adapter slots: after the attention output projection and after the feed-forward output
projection, before dropout, residual and LayerNorm (`dense -> h + adapter(h) -> dropout ->
LayerNorm(h + input)`, the official AdaMix placement). With no adapter a slot is the
identity. LoRA sits inside the projections themselves (`adapters.LoRADense`).

Attention (`attention=`): 'standard' computes softmax(QK^T / sqrt(d)) V as plain ops, with
dropout on the attention probabilities in training, as transformers does. 'fused' calls
`jax.nn.dot_product_attention` (cuDNN flash attention on NVIDIA GPUs in bfloat16/float16,
XLA's implementation elsewhere): the [B, H, L, L] probabilities are never written to
memory, and there is **no dropout on the attention probabilities** (the fused kernels
have none); everything else is unchanged.

Rematerialisation (`remat=`): 'none' keeps every layer's activations for the backward
pass; 'full' keeps only each layer's input and recomputes the layer in the backward pass
(`jax.checkpoint`, one more forward of compute, activation memory of one layer instead of
all); 'dots' keeps the outputs of the projections (matmuls without batch dimensions) and
recomputes the rest (attention scores and probabilities, activations, dropout masks,
LayerNorm). Values and gradients are those of 'none' (the dropout masks are redrawn
from the same keys). On CPU the savings need XLA's memory-ordered scheduler
(`runs.CPU_MEMORY_SCHEDULER` in XLA_FLAGS).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adamix_jax.adapters import AdaptationConfig, BottleneckAdapter, LoRADense, activation
from adamix_jax.routing import Routing

SUPPORTED_MODEL_TYPES = ('bert', 'roberta')
ATTENTIONS = ('standard', 'fused')
REMATS = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The architecture of a BERT-family encoder (the fields of a HF `config.json`)."""

  model_type: str = 'bert'
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = 'gelu'
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  initializer_range: float = 0.02
  classifier_dropout: float | None = None

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(f'Unsupported model_type {self.model_type!r}; supported model types: '
                       f'{", ".join(SUPPORTED_MODEL_TYPES)}')
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f'hidden_size {self.hidden_size} is not a multiple of '
                       f'num_attention_heads {self.num_attention_heads}')
    activation(self.hidden_act)

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any]) -> 'EncoderConfig':
    """Builds the config from a parsed HF `config.json` (unknown keys are ignored)."""
    if 'model_type' not in d:
      raise ValueError('config.json has no "model_type"; supported model types: '
                       f'{", ".join(SUPPORTED_MODEL_TYPES)}')
    if d.get('position_embedding_type', 'absolute') != 'absolute':
      raise ValueError('Only position_embedding_type="absolute" is supported, got '
                       f'{d["position_embedding_type"]!r}')
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})

  def to_hf_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d['position_embedding_type'] = 'absolute'
    return d

  @property
  def is_roberta(self) -> bool:
    return self.model_type == 'roberta'

  @property
  def max_input_length(self) -> int:
    """The longest input the position table covers (RoBERTa's positions start after
    pad_token_id: 514 positions hold 512 tokens)."""
    return self.max_position_embeddings - (self.pad_token_id + 1 if self.is_roberta else 0)


def _layer_norm(config: EncoderConfig, name: str) -> nn.LayerNorm:
  # LayerNorm always in float32, whatever the compute dtype.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32,
                      param_dtype=jnp.float32, name=name)


def position_ids_for(config: EncoderConfig, input_ids: jax.Array) -> jax.Array:
  """BERT: 0..L-1. RoBERTa: padding_idx + 1 + rank among non-padding tokens; pads get padding_idx."""
  if config.is_roberta:
    mask = (input_ids != config.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask + config.pad_token_id
  return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


class Embeddings(nn.Module):
  config: EncoderConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    init = nn.initializers.normal(cfg.initializer_range)
    self.word_embeddings = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init)
    self.position_embeddings = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size,
                                        embedding_init=init)
    self.token_type_embeddings = nn.Embed(cfg.type_vocab_size, cfg.hidden_size,
                                          embedding_init=init)
    self.LayerNorm = _layer_norm(cfg, 'LayerNorm')  # pylint: disable=invalid-name
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, deterministic: bool):
    cfg = self.config
    if input_ids.shape[-1] > cfg.max_input_length:  # an embedding lookup past the table is NaN
      raise ValueError(
          f'Inputs of {input_ids.shape[-1]} tokens exceed the {cfg.max_input_length} positions '
          f'of this {cfg.model_type} model (max_position_embeddings='
          f'{cfg.max_position_embeddings}); truncate them (config.data.max_length).')
    positions = position_ids_for(cfg, input_ids)
    h = (self.word_embeddings(input_ids) + self.position_embeddings(positions) +
         self.token_type_embeddings(token_type_ids))
    h = self.LayerNorm(h).astype(self.dtype)
    return self.dropout(h, deterministic=deterministic)


def fused_attention(q, k, v, attention_mask):
  """`jax.nn.dot_product_attention` over [B, L, H, D] heads; cuDNN where it applies."""
  cudnn = (jax.default_backend() == 'gpu' and q.dtype in (jnp.bfloat16, jnp.float16))
  b, length = q.shape[0], q.shape[1]
  # cuDNN takes the mask as a [B, 1, T, S] bias: broadcast the key-padding mask to it.
  mask = jnp.broadcast_to(attention_mask[:, None, None, :].astype(bool),
                          (b, 1, length, k.shape[1]))
  return jax.nn.dot_product_attention(q, k, v, mask=mask,
                                      implementation='cudnn' if cudnn else None)


class SelfAttention(nn.Module):
  config: EncoderConfig
  adaptation: AdaptationConfig
  layer: int
  dtype: jnp.dtype = jnp.float32
  attention: str = 'standard'

  @nn.compact
  def __call__(self, h, attention_mask, routing: Routing, deterministic: bool):
    cfg = self.config
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads

    def proj(name):
      dense = LoRADense(cfg.hidden_size, self.adaptation, self.layer, name, self.dtype,
                        nn.initializers.normal(cfg.initializer_range), name=name)
      y = dense(h, routing, deterministic)
      return y.reshape(y.shape[:-1] + (heads, head_dim))

    q, k, v = proj('query'), proj('key'), proj('value')
    if self.attention == 'fused':
      context = fused_attention(q, k, v, attention_mask)
      return context.reshape(context.shape[:-2] + (cfg.hidden_size,))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
    # Padding keys are masked out; softmax in float32.
    scores = jnp.where(attention_mask[:, None, None, :].astype(bool), scores,
                       jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
    context = jnp.einsum('bhqk,bkhd->bqhd', probs.astype(self.dtype), v)
    return context.reshape(context.shape[:-2] + (cfg.hidden_size,))


class SublayerOutput(nn.Module):
  """`dense -> adapter slot -> dropout -> LayerNorm(h + residual)` (HF's *Output modules)."""

  config: EncoderConfig
  adaptation: AdaptationConfig
  layer: int
  site: str  # 'attention' or 'ffn': which adapter slot this is
  dense_site: str  # LoRA target name of the dense projection
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h, residual, routing: Routing, deterministic: bool):
    cfg = self.config
    h = LoRADense(cfg.hidden_size, self.adaptation, self.layer, self.dense_site, self.dtype,
                  nn.initializers.normal(cfg.initializer_range), name='dense')(
                      h, routing, deterministic)
    if self.site in self.adaptation.adapter_sites:
      h = BottleneckAdapter(self.adaptation, self.layer, self.site, self.dtype,
                            name='adapter')(h, routing)
    h = nn.Dropout(cfg.hidden_dropout_prob)(h, deterministic=deterministic)
    out = _layer_norm(cfg, 'LayerNorm')(h.astype(jnp.float32) + residual.astype(jnp.float32))
    return out.astype(self.dtype)


class Attention(nn.Module):
  config: EncoderConfig
  adaptation: AdaptationConfig
  layer: int
  dtype: jnp.dtype = jnp.float32
  attention: str = 'standard'

  @nn.compact
  def __call__(self, h, attention_mask, routing: Routing, deterministic: bool):
    context = SelfAttention(self.config, self.adaptation, self.layer, self.dtype,
                            self.attention, name='self')(
                                h, attention_mask, routing, deterministic)
    return SublayerOutput(self.config, self.adaptation, self.layer, 'attention',
                          'attention_output', self.dtype, name='output')(
                              context, h, routing, deterministic)


class TransformerLayer(nn.Module):
  config: EncoderConfig
  adaptation: AdaptationConfig
  layer: int
  dtype: jnp.dtype = jnp.float32
  attention: str = 'standard'

  @nn.compact
  def __call__(self, h, attention_mask, routing: Routing, deterministic: bool):
    cfg = self.config
    a = Attention(cfg, self.adaptation, self.layer, self.dtype, self.attention,
                  name='attention')(h, attention_mask, routing, deterministic)
    inter = LoRADense(cfg.intermediate_size, self.adaptation, self.layer, 'intermediate',
                      self.dtype, nn.initializers.normal(cfg.initializer_range),
                      name='intermediate_dense')(a, routing, deterministic)
    inter = activation(cfg.hidden_act)(inter)
    return SublayerOutput(cfg, self.adaptation, self.layer, 'ffn', 'output', self.dtype,
                          name='output')(inter, a, routing, deterministic)


class Encoder(nn.Module):
  """Embeddings, the transformer stack and (optionally) the pooler.

  Returns `(sequence_output [B, L, d], pooled_output [B, d] or None)`.
  """

  config: EncoderConfig
  adaptation: AdaptationConfig = AdaptationConfig()
  add_pooler: bool = True
  dtype: jnp.dtype = jnp.float32
  attention: str = 'standard'  # or 'fused' (see the module docstring)
  remat: str = 'none'  # or 'full', 'dots' (see the module docstring)

  def setup(self):
    cfg = self.config
    if self.attention not in ATTENTIONS:
      raise ValueError(f'Unknown attention {self.attention!r}; supported: {ATTENTIONS}')
    if self.remat not in REMATS:
      raise ValueError(f'Unknown remat {self.remat!r}; supported: {tuple(REMATS)}')
    self.embeddings = Embeddings(cfg, self.dtype)
    layer = TransformerLayer
    if self.remat != 'none':
      # static_argnums counts self: 4 is `deterministic` (it selects the dropout branches).
      layer = nn.remat(TransformerLayer, static_argnums=(4,), policy=REMATS[self.remat])
    self.layers = [layer(cfg, self.adaptation, i, self.dtype, self.attention,
                         name=f'layer_{i}')
                   for i in range(cfg.num_hidden_layers)]
    if self.add_pooler:
      self.pooler = nn.Dense(cfg.hidden_size, dtype=self.dtype,
                             kernel_init=nn.initializers.normal(cfg.initializer_range))

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
               routing: Routing = Routing(), deterministic: bool = True):
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    h = self.embeddings(input_ids, token_type_ids, deterministic)
    for layer in self.layers:
      h = layer(h, attention_mask, routing, deterministic)
    pooled = jnp.tanh(self.pooler(h[:, 0])) if self.add_pooler else None
    return h, pooled

  def word_embedding_matrix(self) -> jax.Array:
    return self.embeddings.word_embeddings.embedding
