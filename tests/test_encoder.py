"""Parity of the Flax encoder with transformers' PyTorch models (float32) and bf16 sanity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adamix_jax import model as model_lib
from conftest import save_tiny_checkpoint, tiny_hf_config

TOL = 1e-4


def _padded_batch(pad_id: int, vocab: int = 99, seed: int = 0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, vocab, size=(3, 11))
  mask = np.ones_like(ids)
  mask[1, 7:] = 0
  mask[2, 4:] = 0
  ids[mask == 0] = pad_id
  token_types = np.zeros_like(ids)
  return ids, mask, token_types


def _masked_max_diff(a, b, mask):
  return float(np.abs((np.asarray(a) - np.asarray(b)) * mask[..., None]).max())


@pytest.mark.parametrize('model_type', ['bert', 'roberta'])
def test_hidden_and_pooled_match_transformers(tmp_path, model_type):
  path = save_tiny_checkpoint(tmp_path, model_type, 'base')
  import transformers
  ref = (transformers.BertModel if model_type == 'bert' else
         transformers.RobertaModel).from_pretrained(path).eval()
  model, params, _ = model_lib.from_pretrained(path, head='none')
  ids, mask, types = _padded_batch(ref.config.pad_token_id)
  if model_type == 'bert':
    types[:, 5:] = 1  # exercise token type embeddings
  with torch.no_grad():
    out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
              token_type_ids=torch.tensor(types))
  hidden, pooled = model.apply({'params': params}, jnp.asarray(ids), jnp.asarray(mask),
                               jnp.asarray(types))
  assert _masked_max_diff(hidden, out.last_hidden_state.numpy(), mask) <= TOL
  np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=TOL)


@pytest.mark.parametrize('model_type', ['bert', 'roberta'])
def test_mlm_logits_match_transformers(tmp_path, model_type):
  path = save_tiny_checkpoint(tmp_path, model_type, 'mlm', seed=1)
  import transformers
  ref = (transformers.BertForMaskedLM if model_type == 'bert' else
         transformers.RobertaForMaskedLM).from_pretrained(path).eval()
  model, params, _ = model_lib.from_pretrained(path, head='mlm')
  ids, mask, _ = _padded_batch(ref.config.pad_token_id, seed=1)
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
  got = model.apply({'params': params}, jnp.asarray(ids), jnp.asarray(mask))
  assert got.shape == want.shape
  assert _masked_max_diff(got, want, mask) <= TOL


@pytest.mark.parametrize('model_type', ['bert', 'roberta'])
def test_classifier_logits_match_transformers(tmp_path, model_type):
  path = save_tiny_checkpoint(tmp_path, model_type, 'classifier', seed=2)
  import transformers
  ref = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
  model, params, report = model_lib.from_pretrained(path, head='classifier', num_labels=2)
  assert not report.newly_initialized  # the head came from the checkpoint
  ids, mask, _ = _padded_batch(ref.config.pad_token_id, seed=2)
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
  got = model.apply({'params': params}, jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), want, atol=TOL)


def test_position_ids_roberta_offset_padding_idx():
  from adamix_jax.encoder import EncoderConfig, position_ids_for
  cfg = EncoderConfig(model_type='roberta', pad_token_id=1, hidden_size=8,
                      num_attention_heads=2)
  ids = jnp.array([[0, 5, 6, 2, 1, 1]])
  np.testing.assert_array_equal(position_ids_for(cfg, ids), [[2, 3, 4, 5, 1, 1]])
  bert = EncoderConfig(model_type='bert', hidden_size=8, num_attention_heads=2)
  np.testing.assert_array_equal(position_ids_for(bert, ids), [[0, 1, 2, 3, 4, 5]])



@pytest.mark.parametrize('model_type, pad, max_input', [('bert', 0, 16), ('roberta', 1, 14)])
def test_inputs_longer_than_the_position_table_are_refused(model_type, pad, max_input):
  """A lookup past the position table gives NaN logits; the encoder refuses such inputs."""
  from adamix_jax.encoder import EncoderConfig
  cfg = EncoderConfig(model_type=model_type, pad_token_id=pad, vocab_size=50, hidden_size=8,
                      num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                      max_position_embeddings=16)
  assert cfg.max_input_length == max_input
  model = model_lib.Model(cfg, head='classifier', num_labels=2)
  params = model_lib.init_params(model, jax.random.PRNGKey(0))
  ids = jnp.full((1, max_input), 5)
  assert np.isfinite(model.apply({'params': params}, ids, jnp.ones_like(ids))).all()
  ids = jnp.full((1, max_input + 1), 5)
  with pytest.raises(ValueError, match=f'{max_input + 1} tokens exceed the {max_input} '
                                       'positions'):
    model.apply({'params': params}, ids, jnp.ones_like(ids))


SENTENCES = [
    'A gripping, beautifully acted film.',
    'The plot makes no sense at all and the dialogue is wooden.',
    'It was fine.',
]


def _minilm_inputs(minilm_dir):
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(minilm_dir)
  enc = tok(SENTENCES, padding=True, return_tensors='np')
  return {k: enc[k].astype(np.int64) for k in ('input_ids', 'attention_mask', 'token_type_ids')}


def test_real_minilm_matches_transformers(minilm_dir):
  import transformers
  ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
  model, params, report = model_lib.from_pretrained(minilm_dir, head='none')
  assert report.unused == [] and report.newly_initialized == []
  inputs = _minilm_inputs(minilm_dir)
  assert (inputs['attention_mask'] == 0).any()  # the batch has padding
  with torch.no_grad():
    out = ref(**{k: torch.tensor(v) for k, v in inputs.items()})
  hidden, pooled = model.apply({'params': params}, *(jnp.asarray(inputs[k]) for k in (
      'input_ids', 'attention_mask', 'token_type_ids')))
  assert _masked_max_diff(hidden, out.last_hidden_state.numpy(),
                          inputs['attention_mask']) <= TOL
  np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=TOL)


def test_bf16_forward_close_to_float32(minilm_dir):
  inputs = _minilm_inputs(minilm_dir)
  args = [jnp.asarray(inputs[k]) for k in ('input_ids', 'attention_mask', 'token_type_ids')]
  m32, params, _ = model_lib.from_pretrained(minilm_dir, head='none')
  m16 = model_lib.Model(m32.config, m32.adaptation, head='none', dtype=jnp.bfloat16)
  h32, _ = m32.apply({'params': params}, *args)
  h16, _ = m16.apply({'params': params}, *args)
  assert h16.dtype == jnp.bfloat16
  mask = inputs['attention_mask'][..., None]
  diff = np.asarray(h16, np.float32) * mask - np.asarray(h32) * mask
  rel = np.linalg.norm(diff) / np.linalg.norm(np.asarray(h32) * mask)
  assert 0 < rel <= 2e-2, rel


def test_dropout_is_active_only_when_not_deterministic(tmp_path):
  from adamix_jax.encoder import EncoderConfig
  cfg = EncoderConfig(**{k: v for k, v in tiny_hf_config('bert').to_dict().items()
                         if k in EncoderConfig.__dataclass_fields__})
  model = model_lib.Model(cfg, head='none')
  params = model_lib.init_params(model, jax.random.PRNGKey(0))
  ids = jnp.ones((2, 5), jnp.int32)
  a, _ = model.apply({'params': params}, ids)
  b, _ = model.apply({'params': params}, ids)
  c, _ = model.apply({'params': params}, ids, deterministic=False,
                     rngs={'dropout': jax.random.PRNGKey(1)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_mean_pooling_head_is_the_masked_mean_of_token_states():
  from adamix_jax.encoder import EncoderConfig
  cfg = EncoderConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=20, max_position_embeddings=16)
  model = model_lib.Model(cfg, head='classifier', num_labels=3, pooling='mean')
  params = model_lib.init_params(model, jax.random.PRNGKey(0))
  assert 'pooler' not in params['backbone']
  ids = jnp.array([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
  mask = (ids != 0).astype(jnp.int32)
  logits = model.apply({'params': params}, ids, mask)
  base = model_lib.Model(cfg, head='none', pooling='mean')
  hidden, _ = base.apply({'params': {'backbone': {**params['backbone'], 'pooler': {
      'kernel': jnp.zeros((16, 16)), 'bias': jnp.zeros(16)}}}}, ids, mask)
  pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  out = params['classifier']['out_proj']
  np.testing.assert_allclose(logits, pooled @ out['kernel'] + out['bias'], atol=1e-5)
  # Padding does not change the prediction of the first example.
  alone = model.apply({'params': params}, ids[:1, :3], mask[:1, :3])
  np.testing.assert_allclose(logits[:1], alone, atol=1e-5)


def _fused_pair(**encoder_fields):
  from adamix_jax.adapters import AdaptationConfig
  from adamix_jax.encoder import EncoderConfig
  fields = {k: v for k, v in tiny_hf_config('roberta').to_dict().items()
            if k in EncoderConfig.__dataclass_fields__}
  cfg = EncoderConfig(**{**fields, **encoder_fields})
  adaptation = AdaptationConfig(lora_rank=4, lora_targets=('query', 'value'))
  standard = model_lib.Model(cfg, adaptation, num_labels=2)
  fused = model_lib.Model(cfg, adaptation, num_labels=2, attention='fused')
  return standard, fused, model_lib.init_params(standard, jax.random.PRNGKey(0))


def _assert_trees_close(actual, expected, *, atol: float, label: str = ''):
  """Every leaf of `actual` close to the same path's leaf of `expected`, named on failure."""
  for path, a in jax.tree_util.tree_leaves_with_path(expected):
    b = actual
    for key in path:
      b = b[key.key]
    np.testing.assert_allclose(b, a, atol=atol, err_msg=f'{label} {jax.tree_util.keystr(path)}')


def test_fused_attention_matches_standard_with_padding():
  standard, fused, params = _fused_pair()
  ids, mask, types = _padded_batch(standard.config.pad_token_id)
  labels = jnp.array([0, 1, 1])

  def loss(p, model):
    logits = model.apply({'params': p}, ids, mask, types)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  (l_std, g_std), (l_fused, g_fused) = (jax.value_and_grad(loss)(params, m)
                                        for m in (standard, fused))
  np.testing.assert_allclose(l_fused, l_std, rtol=1e-5)
  assert float(l_std) != 0.0
  _assert_trees_close(g_fused, g_std, atol=1e-5)


def test_fused_attention_has_no_attention_probability_dropout():
  # With only attention-probability dropout (hidden dropout 0), the standard encoder's
  # training forward differs from its eval forward; the fused one's does not.
  standard, fused, params = _fused_pair(hidden_dropout_prob=0.0, classifier_dropout=0.0,
                                        attention_probs_dropout_prob=0.5)
  ids, mask, types = _padded_batch(standard.config.pad_token_id)
  rngs = {'dropout': jax.random.PRNGKey(3)}
  for model, changes in ((standard, True), (fused, False)):
    train = model.apply({'params': params}, ids, mask, types, deterministic=False, rngs=rngs)
    evaluate = model.apply({'params': params}, ids, mask, types)
    assert (not np.allclose(train, evaluate, atol=1e-6)) == changes, model.attention


def test_unknown_attention_is_rejected():
  standard, _, params = _fused_pair()
  model = model_lib.Model(standard.config, attention='flash')
  with pytest.raises(ValueError, match="Unknown attention 'flash'.*standard"):
    model_lib.init_params(model, jax.random.PRNGKey(0))


def _residual_bytes(loss, params) -> int:
  """Bytes that `jax.vjp` keeps for the backward pass (the leaves of its vjp function),
  from shapes alone."""
  vjp_fn = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize
             for x in jax.tree_util.tree_leaves(vjp_fn))


def test_remat_keeps_values_and_gradients_and_saves_less():
  # AdaMix routing and dropout on: the recomputed layers must redraw the same experts and
  # the same dropout masks, or the gradients would differ from the kept-activation ones.
  from adamix_jax.adapters import AdaptationConfig
  from adamix_jax.routing import Routing
  from tiny_models import CONFIG, batch
  adaptation = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=3)
  b = batch(length=12)
  results = {}
  for remat in ('none', 'dots', 'full'):
    model = model_lib.Model(CONFIG, adaptation, num_labels=3, remat=remat)
    params = model_lib.init_params(model, jax.random.PRNGKey(0))

    def loss(p, model=model):
      logits = model.apply({'params': p}, b['input_ids'], b['attention_mask'],
                           b['token_type_ids'], routing=Routing(key=jax.random.PRNGKey(1)),
                           deterministic=False, rngs={'dropout': jax.random.PRNGKey(2)})
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                           b['labels'][:, None], 1))

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    jaxpr = jax.make_jaxpr(jax.grad(loss))(params).jaxpr
    remats = [e for e in jaxpr.eqns if e.primitive.name in ('checkpoint', 'remat2', 'remat')]
    results[remat] = (value, grads, _residual_bytes(loss, params), len(remats), params)
  value, grads, kept, count, params = results['none']
  assert count == 0
  for remat in ('dots', 'full'):
    r_value, r_grads, _, r_count, r_params = results[remat]
    assert jax.tree_util.tree_structure(r_params) == jax.tree_util.tree_structure(params)
    assert r_count == CONFIG.num_hidden_layers, remat
    np.testing.assert_allclose(r_value, value, rtol=1e-6)
    _assert_trees_close(r_grads, grads, atol=1e-6, label=remat)
  assert results['full'][2] < results['dots'][2] < kept, {k: v[2] for k, v in results.items()}


def test_unknown_remat_is_rejected():
  from tiny_models import CONFIG
  with pytest.raises(ValueError, match="Unknown remat 'all'.*'none', 'full', 'dots'"):
    model_lib.init_params(model_lib.Model(CONFIG, remat='all'), jax.random.PRNGKey(0))
