"""Task models: the encoder with a classification/regression head or the (frozen) MLM head.

Heads mirror transformers' so checkpoints and exports map one to one:
- BERT classifier: dropout(pooler output) -> `classifier` Dense (BertForSequenceClassification);
- RoBERTa classifier: dropout(h[CLS]) -> dense -> tanh -> dropout -> out_proj
  (RobertaClassificationHead);
- MLM head: dense -> activation -> LayerNorm -> decoder tied to the word embeddings + bias;
  `prompt` evaluates it only at the mask position and only for the label words.
"""

from __future__ import annotations

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adamix_jax.adapters import AdaptationConfig, activation
from adamix_jax.encoder import Encoder, EncoderConfig
from adamix_jax.routing import Routing

HEADS = ('classifier', 'mlm', 'prompt', 'none')


POOLINGS = ('cls', 'mean')


class ClassificationHead(nn.Module):
  """The task head. `pooling='cls'` is transformers' head (above); `pooling='mean'` averages
  the non-padding token states into `out_proj`, for encoders trained for mean-pooled
  sentence embeddings (sentence-transformers models such as the bundled MiniLM)."""

  config: EncoderConfig
  num_labels: int
  pooling: str = 'cls'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, sequence_output, pooled_output, attention_mask, deterministic: bool):
    cfg = self.config
    rate = cfg.classifier_dropout if cfg.classifier_dropout is not None else (
        cfg.hidden_dropout_prob)
    init = nn.initializers.normal(cfg.initializer_range)
    if self.pooling == 'mean':
      mask = attention_mask[..., None].astype(jnp.float32)
      x = (sequence_output.astype(jnp.float32) * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
      x = nn.Dropout(rate)(x.astype(self.dtype), deterministic=deterministic)
      logits = nn.Dense(self.num_labels, dtype=self.dtype, kernel_init=init, name='out_proj')(x)
    elif cfg.is_roberta:
      x = nn.Dropout(rate)(sequence_output[:, 0], deterministic=deterministic)
      x = jnp.tanh(nn.Dense(cfg.hidden_size, dtype=self.dtype, kernel_init=init,
                            name='dense')(x))
      x = nn.Dropout(rate)(x, deterministic=deterministic)
      logits = nn.Dense(self.num_labels, dtype=self.dtype, kernel_init=init,
                        name='out_proj')(x)
    else:
      x = nn.Dropout(rate)(pooled_output, deterministic=deterministic)
      logits = nn.Dense(self.num_labels, dtype=self.dtype, kernel_init=init, name='out_proj')(x)
    return logits.astype(jnp.float32)


class MLMHead(nn.Module):
  config: EncoderConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h, word_embeddings, vocab_ids=None):
    """Logits over the vocabulary, or over `vocab_ids` only (same values, fewer FLOPs)."""
    cfg = self.config
    h = nn.Dense(cfg.hidden_size, dtype=self.dtype,
                 kernel_init=nn.initializers.normal(cfg.initializer_range), name='dense')(h)
    h = activation(cfg.hidden_act)(h)
    h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=jnp.float32, name='layer_norm')(h)
    bias = self.param('bias', nn.initializers.zeros, (cfg.vocab_size,))
    if vocab_ids is not None:
      word_embeddings = word_embeddings[jnp.asarray(vocab_ids)]
      bias = bias[jnp.asarray(vocab_ids)]
    logits = h.astype(self.dtype) @ word_embeddings.astype(self.dtype).T
    return logits.astype(jnp.float32) + bias


class Model(nn.Module):
  """Encoder + head. Parameters: `backbone`, and `classifier` or `mlm_head`.

  Attributes:
    config: the encoder architecture.
    adaptation: adapters / LoRA inserted into the encoder.
    head: 'classifier' (num_labels outputs; 1 = regression), 'mlm' (vocabulary logits at
      every position), 'prompt' (MLM logits of `label_word_ids` at `mask_positions`) or
      'none' (returns the encoder's `(sequence_output, pooled_output)`).
    num_labels: classifier outputs.
    pooling: the classifier's input: 'cls' (transformers' heads) or 'mean' (masked mean of
      the token states, for sentence-embedding encoders).
    label_word_ids: vocabulary ids of the verbalizer's label words, one per label (prompt
      head).
    dtype: compute dtype (parameters stay float32).
    attention: 'standard' or 'fused' (`encoder.fused_attention`: no dropout on the
      attention probabilities; cuDNN flash attention on GPUs in bfloat16).
    remat: 'none', 'full' or 'dots': what each encoder layer keeps for the backward pass
      (`encoder` module docstring); same values and gradients, less memory.
  """

  config: EncoderConfig
  adaptation: AdaptationConfig = AdaptationConfig()
  head: str = 'classifier'
  num_labels: int = 2
  label_word_ids: tuple[int, ...] = ()
  pooling: str = 'cls'
  dtype: jnp.dtype = jnp.float32
  attention: str = 'standard'
  remat: str = 'none'

  def setup(self):
    if self.head not in HEADS:
      raise ValueError(f'Unknown head {self.head!r}; supported: {HEADS}')
    if self.pooling not in POOLINGS:
      raise ValueError(f'Unknown pooling {self.pooling!r}; supported: {POOLINGS}')
    add_pooler = self.head == 'none' or (self.head == 'classifier' and self.pooling == 'cls'
                                         and not self.config.is_roberta)
    self.backbone = Encoder(self.config, self.adaptation, add_pooler=add_pooler,
                            dtype=self.dtype, attention=self.attention, remat=self.remat)
    if self.head == 'classifier':
      self.classifier = ClassificationHead(self.config, self.num_labels, self.pooling,
                                           self.dtype)
    elif self.head in ('mlm', 'prompt'):
      self.mlm_head = MLMHead(self.config, self.dtype)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, mask_positions=None,
               *, routing: Routing = Routing(), deterministic: bool = True):
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    h, pooled = self.backbone(input_ids, attention_mask, token_type_ids, routing=routing,
                              deterministic=deterministic)
    if self.head == 'none':
      return h, pooled
    if self.head == 'classifier':
      return self.classifier(h, pooled, attention_mask, deterministic)
    embeddings = self.backbone.word_embedding_matrix()
    if self.head == 'mlm':
      return self.mlm_head(h, embeddings)
    if mask_positions is None:
      raise ValueError('The prompt head needs mask_positions (the [MASK] index per example).')
    at_mask = jnp.take_along_axis(h, mask_positions[:, None, None].astype(jnp.int32),
                                  axis=1)[:, 0]
    return self.mlm_head(at_mask, embeddings, vocab_ids=tuple(self.label_word_ids))


def batch_inputs(batch: dict[str, jax.Array]) -> tuple[jax.Array | None, ...]:
  """`Model.__call__`'s positional inputs from a batch dict: input ids, attention mask,
  token types and the prompt's mask positions (None where the batch has none)."""
  return (batch['input_ids'], batch.get('attention_mask'), batch.get('token_type_ids'),
          batch.get('mask_positions'))


def init_params(model: Model, rng: jax.Array, seq_len: int = 8) -> dict:
  """Freshly initialised parameters (shapes only depend on the configs, not on seq_len)."""
  ids = jnp.ones((1, seq_len), jnp.int32) * (model.config.pad_token_id + 1)
  mask_positions = jnp.zeros((1,), jnp.int32) if model.head == 'prompt' else None
  variables = jax.jit(lambda r: model.init(r, ids, mask_positions=mask_positions,
                                           routing=Routing(key=r)))(rng)
  return variables['params']


def from_pretrained(name_or_path, *, adaptation: AdaptationConfig = AdaptationConfig(),
                    head: str = 'classifier', num_labels: int = 2,
                    label_word_ids: tuple[int, ...] = (), pooling: str = 'cls',
                    dtype=jnp.float32, attention: str = 'standard', remat: str = 'none',
                    rng: jax.Array | None = None, allow_pickle: bool = False):
  """A model and its parameters: pretrained tensors where the checkpoint has them, fresh
  initialisation for adapters, LoRA and the task head.

  Returns:
    (model, params, report), report being a `hf_checkpoint.LoadReport`.
  """
  from adamix_jax import hf_checkpoint  # pylint: disable=import-outside-toplevel
  config, pretrained, ignored, source = hf_checkpoint.load_pretrained(
      name_or_path, allow_pickle=allow_pickle)
  model = Model(config, adaptation, head=head, num_labels=num_labels,
                label_word_ids=tuple(label_word_ids), pooling=pooling, dtype=dtype,
                attention=attention, remat=remat)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  params, report = hf_checkpoint.merge_pretrained(
      _fresh_where_needed(model, rng, pretrained), pretrained, source=source, ignored=ignored)
  return model, params, report


def _fresh_where_needed(model: Model, rng: jax.Array,
                        pretrained: dict[tuple[str, ...], np.ndarray]) -> dict:
  """`init_params(model, rng)` where the checkpoint has no tensor of the right shape, and
  shapes (`jax.ShapeDtypeStruct`) elsewhere.

  Only the fresh leaves are computed: the compiled initialisation drops the rest, so loading
  a large pretrained backbone does not generate (or compile the generation of) random values
  that the checkpoint replaces. The fresh values are those of a full `init_params`.
  """
  shapes = traverse_util.flatten_dict(jax.eval_shape(lambda r: init_params(model, r), rng))
  needed = sorted(path for path, shape in shapes.items()
                  if path not in pretrained or tuple(pretrained[path].shape) != shape.shape)
  def fresh_leaves(r):
    flat = traverse_util.flatten_dict(init_params(model, r))
    return {path: flat[path] for path in needed}

  fresh = jax.jit(fresh_leaves)(rng) if needed else {}
  return traverse_util.unflatten_dict({path: fresh.get(path, shape)
                                       for path, shape in shapes.items()})
