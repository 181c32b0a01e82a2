"""Checkpoint loading: formats (single, sharded, pickle opt-in) and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from adamix_jax import hf_checkpoint, model as model_lib
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.hf_checkpoint import CheckpointError
from flax.traverse_util import flatten_dict as flatten
from conftest import save_tiny_checkpoint


def _edit_config(path, **changes):
  cfg = json.loads((path / 'config.json').read_text())
  cfg.update(changes)
  (path / 'config.json').write_text(json.dumps(cfg))


def _edit_tensors(path, fn):
  file = path / 'model.safetensors'
  tensors = load_file(str(file))
  fn(tensors)
  save_file(tensors, str(file))


def test_unsupported_model_type_names_supported_ones(tmp_path):
  save_tiny_checkpoint(tmp_path, 'bert')
  _edit_config(tmp_path, model_type='gpt2')
  with pytest.raises(CheckpointError, match=r"'gpt2'.*bert, roberta"):
    model_lib.from_pretrained(tmp_path)


def test_missing_config_and_weights_files(tmp_path):
  with pytest.raises(CheckpointError, match='config.json'):
    hf_checkpoint.load_config(tmp_path)
  save_tiny_checkpoint(tmp_path, 'bert')
  (tmp_path / 'model.safetensors').unlink()
  with pytest.raises(CheckpointError, match='model.safetensors'):
    model_lib.from_pretrained(tmp_path)


def test_empty_name_and_directory_without_config_are_refused(tmp_path):
  # An empty name is the current directory to pathlib; neither may reach the tokenizer
  # loader, whose error names no file.
  with pytest.raises(CheckpointError, match='No checkpoint given'):
    hf_checkpoint.resolve_model_dir('')
  with pytest.raises(CheckpointError, match=f'{tmp_path} holds no config.json'):
    hf_checkpoint.resolve_model_dir(tmp_path)


def test_missing_local_directory(tmp_path):
  with pytest.raises(CheckpointError, match='does not exist'):
    model_lib.from_pretrained(str(tmp_path / 'nope'))


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
  save_tiny_checkpoint(tmp_path, 'bert')
  _edit_config(tmp_path, intermediate_size=40)
  with pytest.raises(CheckpointError) as e:
    model_lib.from_pretrained(tmp_path, head='none')
  msg = str(e.value)
  assert 'backbone/layer_0/intermediate_dense/kernel' in msg
  assert '(32, 37)' in msg and '(32, 40)' in msg


def test_unexpected_keys_are_listed(tmp_path):
  save_tiny_checkpoint(tmp_path, 'roberta')
  _edit_tensors(tmp_path, lambda t: t.update({'encoder.extra.weight': np.zeros(3, np.float32)}))
  with pytest.raises(CheckpointError, match=r'unexpected.*encoder\.extra\.weight'):
    model_lib.from_pretrained(tmp_path)


def test_missing_keys_are_listed(tmp_path):
  save_tiny_checkpoint(tmp_path, 'bert')
  _edit_tensors(tmp_path, lambda t: t.pop('encoder.layer.1.output.dense.weight'))
  with pytest.raises(CheckpointError, match=r'missing 1 tensors.*layer_1/output/dense/kernel'):
    model_lib.from_pretrained(tmp_path, head='none')


def test_encoder_only_checkpoint_has_no_mlm_head(tmp_path):
  save_tiny_checkpoint(tmp_path, 'bert', 'base')
  with pytest.raises(CheckpointError, match='no MLM head'):
    model_lib.from_pretrained(tmp_path, head='mlm')
  # With a classifier head the checkpoint loads, and the new head is reported, not invented.
  _, _, report = model_lib.from_pretrained(tmp_path, head='classifier')
  assert report.newly_initialized == ['classifier/out_proj/bias', 'classifier/out_proj/kernel']


def test_mlm_checkpoint_with_classifier_reports_unused_head(tmp_path):
  save_tiny_checkpoint(tmp_path, 'roberta', 'mlm')
  _, _, report = model_lib.from_pretrained(tmp_path, head='classifier')
  assert 'mlm_head/dense/kernel' in report.unused
  assert 'classifier/out_proj/kernel' in report.newly_initialized
  assert 'not used by this model (5): mlm_head/bias' in report.summary()
  report.ignored = ['embeddings.position_ids']
  assert 'ignored (buffers, tied decoder, next-sentence head) (1)' in report.summary()


def test_task_head_of_another_label_count_is_reinitialised(tmp_path):
  """Starting a 2-label task from a 3-label (MNLI-like) checkpoint: the head's output layer
  starts afresh and is reported; the rest of the head and the backbone load."""
  save_tiny_checkpoint(tmp_path, 'roberta', 'classifier', num_labels=3)
  ref = load_file(str(tmp_path / 'model.safetensors'))
  _, params, report = model_lib.from_pretrained(tmp_path, head='classifier', num_labels=2)
  head = params['classifier']
  assert head['out_proj']['kernel'].shape == (32, 2)
  np.testing.assert_array_equal(head['dense']['kernel'], ref['classifier.dense.weight'].T)
  assert [r.split(':')[0] for r in report.reinitialized] == ['classifier/out_proj/bias',
                                                           'classifier/out_proj/kernel']
  assert 'checkpoint (3,) vs model (2,)' in report.summary()
  # The same label count loads the head as it is.
  _, params, report = model_lib.from_pretrained(tmp_path, head='classifier', num_labels=3)
  np.testing.assert_array_equal(params['classifier']['out_proj']['kernel'],
                                ref['classifier.out_proj.weight'].T)
  assert not report.reinitialized


def test_adapters_are_newly_initialised_backbone_loaded(tmp_path):
  save_tiny_checkpoint(tmp_path, 'bert')
  _, params, report = model_lib.from_pretrained(
      tmp_path, adaptation=AdaptationConfig(kind='adamix', adapter_size=4, num_experts=3))
  assert 'backbone/layer_0/output/adapter/down_kernel' in report.newly_initialized
  assert params['backbone']['layer_0']['output']['adapter']['down_kernel'].shape == (3, 32, 4)
  ref = load_file(str(tmp_path / 'model.safetensors'))
  np.testing.assert_array_equal(
      params['backbone']['layer_1']['attention']['self']['query']['kernel'],
      ref['encoder.layer.1.attention.self.query.weight'].T)


def test_sharded_safetensors_with_index(tmp_path):
  import transformers
  save_tiny_checkpoint(tmp_path / 'one', 'bert')
  ref = transformers.BertModel.from_pretrained(tmp_path / 'one')
  ref.save_pretrained(tmp_path / 'sharded', max_shard_size='20KB')
  assert (tmp_path / 'sharded' / 'model.safetensors.index.json').is_file()
  _, one, _ = model_lib.from_pretrained(tmp_path / 'one', head='none')
  _, sharded, _ = model_lib.from_pretrained(tmp_path / 'sharded', head='none')
  import chex
  chex.assert_trees_all_equal(one, sharded)


def test_prefixed_keys_load(tmp_path):
  save_tiny_checkpoint(tmp_path, 'bert')
  _edit_tensors(tmp_path, lambda t: t.update({f'bert.{k}': t.pop(k) for k in list(t)}))
  _, params, _ = model_lib.from_pretrained(tmp_path, head='none')
  assert params['backbone']['embeddings']['word_embeddings']['embedding'].shape == (99, 32)


def test_legacy_layer_norm_gamma_beta_names_load(tmp_path):
  """Original BERT checkpoints name LayerNorm parameters gamma/beta (as transformers reads)."""
  save_tiny_checkpoint(tmp_path / 'new', 'bert', 'mlm')
  _, want, _ = model_lib.from_pretrained(tmp_path / 'new', head='mlm')
  save_tiny_checkpoint(tmp_path / 'old', 'bert', 'mlm')
  renamed = []

  def legacy(tensors):
    for k in [k for k in tensors if 'LayerNorm.' in k]:
      new = k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias',
                                                                     'LayerNorm.beta')
      tensors[new] = tensors.pop(k)
      renamed.append(new)
  _edit_tensors(tmp_path / 'old', legacy)
  assert len(renamed) == 2 * (1 + 2 * 2 + 1)  # embeddings, 2 per layer, MLM transform
  _, got, _ = model_lib.from_pretrained(tmp_path / 'old', head='mlm')
  for (path, a), (_, b) in zip(sorted(flatten(want).items()), sorted(flatten(got).items())):
    np.testing.assert_array_equal(a, b, err_msg=str(path))


def test_pickle_only_with_opt_in(tmp_path):
  import torch
  import transformers
  save_tiny_checkpoint(tmp_path, 'bert')
  ref = transformers.BertModel.from_pretrained(tmp_path)
  (tmp_path / 'model.safetensors').unlink()
  torch.save(ref.state_dict(), tmp_path / 'pytorch_model.bin')
  with pytest.raises(CheckpointError, match='allow_pickle'):
    model_lib.from_pretrained(tmp_path, head='none')
  _, params, _ = model_lib.from_pretrained(tmp_path, head='none', allow_pickle=True)
  np.testing.assert_allclose(params['backbone']['pooler']['kernel'],
                             ref.pooler.dense.weight.detach().numpy().T)


def test_params_to_hf_round_trip(tmp_path):
  save_tiny_checkpoint(tmp_path, 'roberta', 'mlm')
  model, params, _ = model_lib.from_pretrained(tmp_path, head='mlm')
  back = hf_checkpoint.params_to_hf(params, model.config, prefix=True)
  ref = load_file(str(tmp_path / 'model.safetensors'))
  expected = {k for k in ref if not k.startswith('lm_head.decoder')}
  assert set(back) == expected
  for k in expected:
    np.testing.assert_array_equal(back[k], ref[k], err_msg=k)


def test_truncated_safetensors_is_refused_naming_the_file(tmp_path):
  path = save_tiny_checkpoint(tmp_path / 'ckpt', 'bert')
  weights = path / 'model.safetensors'
  data = weights.read_bytes()
  weights.write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError, match=r'model\.safetensors: not a readable safetensors '
                                            r'file .*truncated'):
    hf_checkpoint.load_pretrained(str(path))
