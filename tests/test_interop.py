"""Exports to PEFT / transformers / hooked PyTorch adapters, and PEFT import.

Every export is loaded by the PyTorch library that serves it and must give the JAX
model's logits on a padded batch; PEFT files must hold exactly the keys PEFT itself saves.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from adamix_jax import export, hf_checkpoint, merging, methods, runs, train
from adamix_jax.adapters import AdaptationConfig, adaptation_param_kind
from adamix_jax.data import readers
from adamix_jax.interop import InteropError, hf_export, peft_io
from adamix_jax.model import Model
from adamix_jax.routing import Routing
from conftest import save_tiny_checkpoint

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
peft = pytest.importorskip('peft')

ROOT = Path(__file__).resolve().parents[1]
NUM_LABELS = 3
LABELS = ['neg', 'neutral', 'pos']


@pytest.fixture(scope='module')
def bases(tmp_path_factory):
  return {mt: save_tiny_checkpoint(tmp_path_factory.mktemp(mt), mt, 'base')
          for mt in ('bert', 'roberta')}


def _trained(base, adaptation, *, extra=lambda path: False, seed=0):
  """A model whose adaptation, head and `extra` leaves hold random 'trained' values."""
  config, pretrained, ignored, source = hf_checkpoint.load_pretrained(base)
  model = Model(config, adaptation, num_labels=NUM_LABELS)
  # Eager init (as `model.from_pretrained`, without its jit): on CPU the eager op cache is
  # shared by every tiny model, where each jit of a new model compiles from scratch.
  key = jax.random.PRNGKey(seed)
  init = model.init(key, np.ones((1, 8), np.int32), routing=Routing(key=key))['params']
  params, _ = hf_checkpoint.merge_pretrained(init, pretrained, source=source,
                                             ignored=ignored)
  rng = np.random.RandomState(seed)
  flat = traverse_util.flatten_dict(params)
  trained = set()
  for path, leaf in flat.items():
    if adaptation_param_kind(path) or methods.is_head(path) or extra(path):
      flat[path] = np.asarray(leaf) + 0.2 * rng.randn(*leaf.shape).astype(np.float32)
      trained.add('/'.join(path))
  return model, traverse_util.unflatten_dict(flat), trained


def _lora_fields(adaptation):
  return {f: getattr(adaptation, f)
          for f in ('kind', 'lora_rank', 'lora_alpha', 'lora_dropout', 'lora_targets')}


def _batch(model):
  """Token ids with padding in two rows (BERT pads with 0, RoBERTa with 1)."""
  rng = np.random.RandomState(1)
  ids = rng.randint(3, model.config.vocab_size, size=(3, 9))
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  mask[2, 3:] = 0
  ids[mask == 0] = model.config.pad_token_id
  return ids, mask


def _jax_logits(model, params, batch):
  ids, mask = batch
  return np.asarray(model.apply({'params': params}, ids, mask, np.zeros_like(ids)))


def _torch_logits(torch_model, batch):
  ids, mask = batch
  with torch.no_grad():
    return torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)
                       ).logits.numpy()


def _torch_base(base):
  return transformers.AutoModelForSequenceClassification.from_pretrained(
      str(base), num_labels=NUM_LABELS).eval()


def _modules(model_type, targets, num_layers=2):
  names = {'query': 'attention.self.query', 'key': 'attention.self.key',
           'value': 'attention.self.value', 'attention_output': 'attention.output.dense',
           'intermediate': 'intermediate.dense', 'output': 'output.dense'}
  return {f'base_model.model.{model_type}.encoder.layer.{i}.{names[t]}'
          for i in range(num_layers) for t in targets}


# --------------------------------------------------------------------------------------
# PEFT export
# --------------------------------------------------------------------------------------

PEFT_CASES = {
    'bert-lora-qv': ('bert', AdaptationConfig(kind='lora', lora_rank=2, lora_alpha=6.0,
                                              lora_targets=('query', 'value')), None),
    # 'output' and 'attention_output' both end in output.dense; RoBERTa's head has a dense.
    'roberta-lora-ambiguous': ('roberta', AdaptationConfig(
        kind='lora', lora_rank=2, lora_targets=('key', 'attention_output', 'intermediate',
                                                'output')), None),
    'bert-adamix-mean-delta': ('bert', AdaptationConfig(
        kind='adamix_lora', num_experts=3, share_up=False, lora_rank=2, lora_alpha=5.0,
        lora_targets=('query', 'output')), 'mean_delta'),
    'roberta-lora-layernorm': ('roberta', AdaptationConfig(
        kind='lora', lora_rank=3, lora_targets=('value',)), 'layer_norm'),
}


@pytest.mark.parametrize('case', list(PEFT_CASES))
def test_peft_export_loads_without_warnings_and_matches_jax(case, bases, tmp_path):
  model_type, adaptation, variant = PEFT_CASES[case]
  lora_merge = 'mean_delta' if variant == 'mean_delta' else 'mean_factors'
  extra = (lambda p: p[0] == 'backbone' and methods.is_layer_norm(p)) if (
      variant == 'layer_norm') else (lambda p: False)
  model, params, trained = _trained(bases[model_type], adaptation, extra=extra)
  out = peft_io.export_peft(model, params, tmp_path / 'peft',
                            base_checkpoint=bases[model_type], trained=trained,
                            lora_merge=lora_merge)

  cfg = json.loads((out / peft_io.CONFIG).read_text())
  rank = adaptation.lora_rank * (adaptation.num_experts if variant == 'mean_delta' else 1)
  assert cfg['r'] == rank
  assert cfg['lora_alpha'] / cfg['r'] == pytest.approx(
      adaptation.lora_alpha / adaptation.lora_rank)
  assert cfg['base_model_name_or_path'] == str(bases[model_type].resolve())
  assert cfg['modules_to_save'] == (['classifier', 'LayerNorm'] if variant == 'layer_norm'
                                    else ['classifier'])

  # Exactly the keys PEFT saves for this config, and LoRA on exactly our projections.
  reference = peft.get_peft_model(_torch_base(bases[model_type]),
                                  peft.LoraConfig.from_pretrained(str(out)))
  expected_keys = set(peft.get_peft_model_state_dict(reference))
  assert set(load_file(str(out / peft_io.WEIGHTS))) == expected_keys
  lora_modules = {n for n, m in reference.named_modules()
                  if isinstance(m, peft.tuners.lora.LoraLayer)}
  assert lora_modules == _modules(model_type, adaptation.lora_targets)

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    loaded = peft.PeftModel.from_pretrained(_torch_base(bases[model_type]), str(out)).eval()
  messages = [str(w.message).lower() for w in caught]
  assert not [m for m in messages if 'missing' in m or 'unexpected' in m], messages

  merged_model, merged_params = merging.merged_model(model, params, lora_merge=lora_merge)
  batch = _batch(model)
  np.testing.assert_allclose(_torch_logits(loaded, batch),
                             _jax_logits(merged_model, merged_params, batch), atol=1e-4)


def test_peft_export_refuses_what_it_cannot_map(bases, tmp_path):
  base = bases['bert']
  model, params, trained = _trained(base, AdaptationConfig(kind='lora', lora_rank=2))
  with pytest.raises(InteropError, match=r"output/dense/bias was trained.*format 'hf'"):
    peft_io.export_peft(model, params, tmp_path, base_checkpoint=base,
                        trained=trained | {'backbone/layer_0/output/dense/bias'})
  adapter_model, adapter_params, _ = _trained(base, AdaptationConfig(kind='adapter',
                                                                     adapter_size=4))
  with pytest.raises(InteropError, match=r"kind 'adapter'.*format 'adapters'"):
    peft_io.export_peft(adapter_model, adapter_params, tmp_path, base_checkpoint=base)
  with pytest.raises(InteropError, match=r'cannot be folded.*adapters'):
    hf_export.export_hf(adapter_model, adapter_params, tmp_path, base_checkpoint=base)
  prompt = Model(model.config, model.adaptation, head='prompt', label_word_ids=(5, 6))
  for fn in (peft_io.export_peft, hf_export.export_hf):
    with pytest.raises(InteropError, match=r"classifier-head models.*'prompt' head"):
      fn(prompt, params, tmp_path, base_checkpoint=base)
  with pytest.raises(InteropError, match=r"bottleneck adapters; kind 'lora'.*'peft' or 'hf'"):
    hf_export.export_adapters(model, params, tmp_path, base_checkpoint=base)


# --------------------------------------------------------------------------------------
# transformers (hf) export
# --------------------------------------------------------------------------------------

HF_CASES = {
    'bert-lora': ('bert', 'lora', AdaptationConfig(
        kind='lora', lora_rank=2, lora_targets=('query', 'value', 'intermediate'))),
    'roberta-adamix-lora': ('roberta', 'adamix_lora', AdaptationConfig(
        kind='adamix_lora', num_experts=2, lora_rank=2, lora_targets=('key', 'output'))),
    'bert-bitfit': ('bert', 'bitfit', AdaptationConfig()),
}


@pytest.mark.parametrize('case', list(HF_CASES))
def test_hf_export_loads_with_auto_model_and_matches_jax(case, bases, tmp_path):
  model_type, method, adaptation = HF_CASES[case]
  extra = (lambda p: p[0] == 'backbone' and p[-1] == 'bias') if method == 'bitfit' else (
      lambda p: False)
  model, params, _ = _trained(bases[model_type], adaptation, extra=extra)
  out = hf_export.export_hf(model, params, tmp_path / 'hf', base_checkpoint=bases[model_type],
                            labels=LABELS)
  loaded, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(out), output_loading_info=True)
  assert not any(info.values()), info
  assert type(loaded).__name__ == hf_export.ARCHITECTURES[model_type]
  assert loaded.config.id2label == dict(enumerate(LABELS))
  merged_model, merged_params = merging.merged_model(model, params)
  batch = _batch(model)
  np.testing.assert_allclose(_torch_logits(loaded.eval(), batch),
                             _jax_logits(merged_model, merged_params, batch), atol=1e-4)


# --------------------------------------------------------------------------------------
# Bottleneck adapters on PyTorch via hooks
# --------------------------------------------------------------------------------------

ADAPTER_CASES = {
    'bert-adapter-ffn': ('bert', AdaptationConfig(kind='adapter', adapter_size=4)),
    'roberta-adamix-houlsby': ('roberta', AdaptationConfig(
        kind='adamix', adapter_size=4, num_experts=2, placement='houlsby',
        adapter_activation='relu')),
}


@pytest.mark.parametrize('case', list(ADAPTER_CASES))
def test_hooked_torch_adapters_match_jax(case, bases, tmp_path):
  from adamix_jax.interop import torch_adapters  # pylint: disable=import-outside-toplevel
  model_type, adaptation = ADAPTER_CASES[case]
  model, params, trained = _trained(bases[model_type], adaptation)
  out = hf_export.export_adapters(model, params, tmp_path / 'adapters',
                                  base_checkpoint=bases[model_type], labels=LABELS,
                                  trained=trained)
  modules = ['output'] + (['attention.output'] if adaptation.placement == 'houlsby' else [])
  head = (['classifier.weight', 'classifier.bias'] if model_type == 'bert' else
          [f'classifier.{m}.{p}' for m in ('dense', 'out_proj') for p in ('weight', 'bias')])
  assert set(load_file(str(out / hf_export.ADAPTERS))) == {
      f'{model_type}.encoder.layer.{i}.{m}.adapter.{lin}.{p}'
      for i in range(2) for m in modules for lin in ('down', 'up')
      for p in ('weight', 'bias')} | set(head)

  loaded = torch_adapters.from_pretrained(out)
  assert loaded.config.id2label == dict(enumerate(LABELS))
  merged_model, merged_params = merging.merged_model(model, params)
  batch = _batch(model)
  expected = _jax_logits(merged_model, merged_params, batch)
  np.testing.assert_allclose(_torch_logits(loaded, batch), expected, atol=1e-4)
  # The hooks do the work: without them the logits are the plain base's.
  torch_adapters.detach_adapters(loaded)
  assert np.abs(_torch_logits(loaded, batch) - expected).max() > 1e-3


# --------------------------------------------------------------------------------------
# PEFT import
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('adaptation, lora_merge', [
    (AdaptationConfig(kind='lora', lora_rank=2, lora_alpha=3.0, lora_dropout=0.1,
                      lora_targets=('value', 'attention_output', 'intermediate')),
     'mean_factors'),
    (AdaptationConfig(kind='adamix_lora', num_experts=2, share_up=False, lora_rank=2,
                      lora_targets=('query', 'output')), 'mean_delta'),
], ids=['lora', 'adamix-mean-delta'])
def test_peft_round_trip_gives_identical_parameters(adaptation, lora_merge, bases, tmp_path):
  model, params, _ = _trained(bases['roberta'], adaptation)
  merged, merged_adaptation = merging.merge_experts(params, adaptation, lora_merge=lora_merge)
  peft_io.export_peft(model, params, tmp_path, base_checkpoint=bases['roberta'],
                      lora_merge=lora_merge)
  loaded_model, loaded, _ = peft_io.load_peft(tmp_path)
  assert _lora_fields(loaded_model.adaptation) == _lora_fields(merged_adaptation)
  chex.assert_trees_all_equal(jax.device_get(loaded), jax.device_get(merged))


@pytest.fixture(scope='module')
def peft_dir(bases, tmp_path_factory):
  """A PEFT adapter of the tiny BERT: LoRA r=2 on query and value, 3-label head."""
  model, params, _ = _trained(bases['bert'], AdaptationConfig(kind='lora', lora_rank=2))
  out = tmp_path_factory.mktemp('peft')
  peft_io.export_peft(model, params, out, base_checkpoint=bases['bert'])
  return out, model, params


def test_import_as_adamix_lora_starts_every_expert_as_the_adapter(peft_dir):
  out, model, params = peft_dir
  mixture = dataclasses.replace(model.adaptation, kind='adamix_lora', num_experts=3)
  mix_model, mix_params, _ = peft_io.load_peft(out, adaptation=mixture)
  value = mix_params['backbone']['layer_1']['attention']['self']['value']
  expected = params['backbone']['layer_1']['attention']['self']['value']
  assert value['lora_a'].shape == (3, 32, 2) and value['lora_b'].shape == (1, 2, 32)
  for k in range(3):
    np.testing.assert_array_equal(value['lora_a'][k], expected['lora_a'])
  merged, merged_adaptation = merging.merge_experts(mix_params, mixture)
  assert _lora_fields(merged_adaptation) == _lora_fields(model.adaptation)
  # The merge's mean of E equal experts is the adapter up to float rounding.
  chex.assert_trees_all_close(jax.device_get(merged), jax.device_get(params), atol=1e-7,
                              rtol=1e-6)


def _edited_copy(src, dst, *, config=None, tensors=None):
  shutil.copytree(src, dst)
  if config:
    cfg = json.loads((dst / peft_io.CONFIG).read_text())
    cfg.update(config)
    (dst / peft_io.CONFIG).write_text(json.dumps(cfg))
  if tensors:
    state = load_file(str(dst / peft_io.WEIGHTS))
    tensors(state)
    save_file(state, str(dst / peft_io.WEIGHTS))
  return dst


QUERY_A = 'base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight'
VALUE_B = 'base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight'


def test_import_rank_and_shape_mismatches_name_the_key_and_both_shapes(peft_dir, tmp_path):
  out, model, _ = peft_dir
  bad_r = _edited_copy(out, tmp_path / 'r', config={'r': 3})
  with pytest.raises(InteropError, match=r'query\.lora_A\.weight has shape \(2, 32\); with '
                                         r'r=3 .* must be \(3, 32\)'):
    peft_io.load_peft(bad_r)

  def widen(state):
    state[VALUE_B] = np.zeros((33, 2), np.float32)
  bad_shape = _edited_copy(out, tmp_path / 'shape', tensors=widen)
  with pytest.raises(InteropError, match=r'value\.lora_B\.weight has shape \(33, 2\), the '
                                         r'model expects \(32, 2\)'):
    peft_io.load_peft(bad_shape)
  with pytest.raises(InteropError, match=r'model lora_rank 4 vs adapter r 2'):
    peft_io.load_peft(out, adaptation=dataclasses.replace(model.adaptation, lora_rank=4))
  with pytest.raises(InteropError, match=r"lora_targets \('query',\) vs adapter "
                                         r"\('query', 'value'\)"):
    peft_io.load_peft(out, adaptation=dataclasses.replace(model.adaptation,
                                                          lora_targets=('query',)))


def test_import_to_export_refuses_an_adapter_without_its_head(peft_dir, tmp_path):
  from adamix_jax.data.tasks import custom_task
  out, _, _ = peft_dir

  def drop_head(state):
    for key in [k for k in state if '.classifier.' in k]:
      del state[key]
  headless = _edited_copy(out, tmp_path / 'headless', tensors=drop_head,
                          config={'modules_to_save': None, 'task_type': 'FEATURE_EXTRACTION'})
  peft_io.load_peft(headless)  # usable to start training from
  with pytest.raises(InteropError, match=r'headless.*no classification head .*FEATURE_EXTR'):
    peft_io.import_to_export(headless, tmp_path / 'export',
                             task=custom_task('three', ['text'], LABELS))
  assert not (tmp_path / 'export').exists()


def test_import_refuses_unsupported_configs_targets_and_bases(peft_dir, tmp_path):
  out, _, _ = peft_dir
  with pytest.raises(InteropError, match=r"PEFT config type 'IA3' is not supported; "
                                         r'supported: peft_type LORA'):
    peft_io.load_peft(_edited_copy(out, tmp_path / 'ia3', config={'peft_type': 'IA3'}))
  with pytest.raises(InteropError, match=r'not supported: use_dora \(DoRA\)'):
    peft_io.load_peft(_edited_copy(out, tmp_path / 'dora', config={'use_dora': True}))

  def pooler_lora(state):
    state['base_model.model.bert.pooler.dense.lora_A.weight'] = np.zeros((2, 32), np.float32)
  with pytest.raises(InteropError, match=r"LoRA on 'bert\.pooler\.dense'.*cannot hold"):
    peft_io.load_peft(_edited_copy(out, tmp_path / 'pooler', tensors=pooler_lora))

  def one_layer(state):
    del state[QUERY_A], state[QUERY_A.replace('lora_A', 'lora_B')]
  with pytest.raises(InteropError, match=r"LoRA on 'query' in layers \[1\] of 2"):
    peft_io.load_peft(_edited_copy(out, tmp_path / 'layers', tensors=one_layer))

  gpt2 = tmp_path / 'gpt2'
  gpt2.mkdir()
  (gpt2 / 'config.json').write_text(json.dumps({'model_type': 'gpt2'}))
  with pytest.raises(InteropError, match=r"base model .*gpt2.* cannot be mapped.*'gpt2'"):
    peft_io.load_peft(out, base_checkpoint=str(gpt2))


def test_import_cli_writes_an_export_that_predicts_like_the_adapter(peft_dir, tmp_path):
  out, model, params = peft_dir
  subprocess.run([sys.executable, '-m', 'experiments.import_peft', f'--adapter={out}',
                  f'--out={tmp_path}', '--task=three', f'--labels={",".join(LABELS)}'],
                 cwd=ROOT, check=True, capture_output=True)
  info = export.read_info(tmp_path)
  assert info['labels'] == LABELS and info['adaptation']['kind'] == 'lora'
  loaded_model, loaded, _ = export.load_export(tmp_path)
  batch = _batch(model)
  np.testing.assert_array_equal(_jax_logits(loaded_model, loaded, batch),
                                _jax_logits(model, params, batch))


def test_convert_export_takes_the_trained_set_from_export_json(bases, tmp_path):
  from adamix_jax import interop  # pylint: disable=import-outside-toplevel
  from adamix_jax.data.tasks import custom_task  # pylint: disable=import-outside-toplevel
  layer_norm = lambda p: p[0] == 'backbone' and methods.is_layer_norm(p)
  model, params, trained = _trained(bases['bert'], AdaptationConfig(kind='lora', lora_rank=2),
                                    extra=layer_norm)
  flat = traverse_util.flatten_dict(params)
  export.write_export(tmp_path / 'export', {n: np.asarray(flat[tuple(n.split('/'))])
                                            for n in trained},
                      base_checkpoint=str(bases['bert']), method='lora', merged_method='lora',
                      adaptation=model.adaptation, task=custom_task('t', ['s'], LABELS),
                      max_length=16)
  out = interop.convert_export(tmp_path / 'export', tmp_path / 'peft', 'peft')
  assert json.loads((out / peft_io.CONFIG).read_text())['modules_to_save'] == [
      'classifier', 'LayerNorm']
  _, loaded, _ = peft_io.load_peft(out)
  chex.assert_trees_all_equal(jax.device_get(loaded), jax.device_get(params))
  with pytest.raises(InteropError, match=r"Unknown export format 'onnx'"):
    interop.convert_export(tmp_path / 'export', tmp_path / 'x', 'onnx')


def test_exports_need_neither_torch_nor_peft_and_the_hooks_say_so():
  code = ("import sys; sys.modules['torch'] = sys.modules['peft'] = None\n"
          'from adamix_jax.interop import hf_export, peft_io\n'
          'try:\n'
          '  from adamix_jax.interop import torch_adapters\n'
          'except ImportError as e:\n'
          '  print(e)\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                       capture_output=True, text=True)
  assert 'torch_adapters needs PyTorch: pip install torch' in out.stdout


# --------------------------------------------------------------------------------------
# The real MiniLM: train, export with the CLI, serve with transformers
# --------------------------------------------------------------------------------------


def test_minilm_lora_exported_to_hf_predicts_the_jax_labels(minilm_dir, tmp_path):
  from configs import tiny  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.model.checkpoint = str(minilm_dir)
  config.method = 'lora'
  config.num_train_steps = 4
  config.eval_every_steps = 4
  config.consistency_weight = 0.0
  config.data.pad_to_max = True  # one compiled shape for training, one for evaluation
  config.eval_batch_size = 128
  train.train_and_evaluate(config, tmp_path / 'run')
  subprocess.run([sys.executable, '-m', 'experiments.export', f'--workdir={tmp_path / "run"}',
                  '--format=hf', f'--out={tmp_path / "hf"}'], cwd=ROOT, check=True,
                 capture_output=True)

  model, params, info = export.load_export(tmp_path / 'run' / 'export')
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'hf'))
  hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(tmp_path / 'hf')).eval()
  assert hf_model.config.id2label == dict(enumerate(info['labels']))
  _, examples = readers.load_examples(config.data, 'dev')
  enc = tokenizer([e.texts[0] for e in examples], padding=True, truncation=True,
                  max_length=info['max_length'], return_tensors='np')
  ids, mask = enc['input_ids'], enc['attention_mask']
  jax_logits = np.asarray(jax.jit(model.apply)({'params': params}, ids, mask,
                                               np.zeros_like(ids)))
  torch_logits = _torch_logits(hf_model, (ids, mask))
  np.testing.assert_allclose(torch_logits, jax_logits, atol=1e-4)
  np.testing.assert_array_equal(torch_logits.argmax(-1), jax_logits.argmax(-1))
  # Not vacuous: LoRA's B starts at zero and was trained, so the folded kernels are not
  # the base's.
  assert np.abs(np.asarray(params['backbone']['layer_0']['attention']['self']['query']
                           ['lora_b'])).max() > 0


def test_training_continues_from_a_peft_adapter(tiny_checkpoint, tmp_path):
  """config.model.peft_adapter: the run starts from the adapter's LoRA factors."""
  import torch
  import transformers
  from peft import LoraConfig, get_peft_model
  from configs import tiny
  torch.manual_seed(0)
  base = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint)
  peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=[
      'query', 'value'], modules_to_save=['classifier'], task_type='SEQ_CLS'))
  for name, p in peft_model.named_parameters():
    if 'lora_B' in name:
      torch.nn.init.normal_(p)  # non-zero, so the overlay is visible
  peft_model.save_pretrained(tmp_path / 'adapter')
  config = tiny.get_config()
  config.model.checkpoint = str(tiny_checkpoint)
  config.model.peft_adapter = str(tmp_path / 'adapter')
  config.method = 'lora'
  config.adapter.lora_rank, config.adapter.lora_alpha = 2, 4.0
  _, trainable = runs.build_run(config, tmp_path / 'run')
  query = trainable['backbone']['layer_1']['attention']['self']['query']
  ref = dict(peft_model.named_parameters())
  prefix = 'base_model.model.bert.encoder.layer.1.attention.self.query'
  np.testing.assert_allclose(np.asarray(query['lora_a']),
                             ref[f'{prefix}.lora_A.default.weight'].detach().numpy().T)
  np.testing.assert_allclose(np.asarray(query['lora_b']),
                             ref[f'{prefix}.lora_B.default.weight'].detach().numpy().T)


def test_mean_pooled_classifier_cannot_go_to_transformers(bases):
  model = Model(hf_checkpoint.load_config(bases['bert']), pooling='mean')
  with pytest.raises(InteropError, match='pooling'):
    hf_export.check_classifier(model, 'export --format hf')
