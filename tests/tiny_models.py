"""Tiny random encoders and batches shared by the adapter / routing / merging tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from adamix_jax import model as model_lib
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.encoder import EncoderConfig
from adamix_jax.routing import Routing

VOCAB = 50
CONFIG = EncoderConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=24,
                       max_position_embeddings=16)


def make(adaptation: AdaptationConfig, *, num_labels: int = 3, seed: int = 0,
         config: EncoderConfig = CONFIG):
  """A tiny classifier model and freshly initialised parameters (a fresh dict each call)."""
  model, params = _make(adaptation, num_labels, seed, config)
  return model, jax.tree_util.tree_map(lambda x: x, params)


@functools.lru_cache(maxsize=None)
def _make(adaptation, num_labels, seed, config):
  model = model_lib.Model(config, adaptation, num_labels=num_labels)
  # Eager init (like `model_lib.init_params`, without its jit): on CPU the eager op cache is
  # shared by every tiny model, where each jit of a new model compiles from scratch.
  rng = jax.random.PRNGKey(seed)
  ids = jnp.ones((1, 8), jnp.int32) * (config.pad_token_id + 1)
  return model, model.init(rng, ids, routing=Routing(key=rng))['params']


def batch(seed: int = 0, size: int = 4, length: int = 6, num_labels: int = 3) -> dict:
  """Random token ids with some padding, and labels."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(1, VOCAB, size=(size, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, length - 2:] = 0
  ids[mask == 0] = CONFIG.pad_token_id
  labels = (rng.randint(0, num_labels, size=(size,)).astype(np.int32) if num_labels > 1
            else rng.randn(size).astype(np.float32))
  return {'input_ids': jnp.asarray(ids), 'attention_mask': jnp.asarray(mask),
          'token_type_ids': jnp.zeros_like(jnp.asarray(ids)), 'labels': jnp.asarray(labels)}


def logits(model, params, b: dict, routing, *, deterministic: bool = True, dropout_key=None):
  """The model's forward pass on a batch from `batch`."""
  rngs = {} if dropout_key is None else {'dropout': dropout_key}
  return model.apply({'params': params}, b['input_ids'], b['attention_mask'],
                     b['token_type_ids'], routing=routing, deterministic=deterministic,
                     rngs=rngs)
