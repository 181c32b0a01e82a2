"""Methods: trainable sets, partition/combine, and parameter counts from shapes alone."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from flax import traverse_util

from adamix_jax import methods
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.encoder import EncoderConfig
from tiny_models import CONFIG, make

ROBERTA_LARGE = EncoderConfig(model_type='roberta', vocab_size=50265, hidden_size=1024,
                              num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, max_position_embeddings=514,
                              type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
BERT_BASE = EncoderConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                          num_attention_heads=12, intermediate_size=3072,
                          max_position_embeddings=512, type_vocab_size=2)

SMALL = {'adapter_size': 4, 'num_experts': 3, 'lora_rank': 2}
LAYER0 = ('backbone', 'layer_0')
HEAD = {('classifier', 'out_proj', 'kernel'), ('classifier', 'out_proj', 'bias')}
LAYER_NORMS = {p + (leaf,) for p in (('backbone', 'embeddings', 'LayerNorm'),
                                     LAYER0 + ('attention', 'output', 'LayerNorm'),
                                     LAYER0 + ('output', 'LayerNorm'),
                                     ('backbone', 'layer_1', 'attention', 'output', 'LayerNorm'),
                                     ('backbone', 'layer_1', 'output', 'LayerNorm'))
               for leaf in ('scale', 'bias')}


def _trainable(method, *, train_layer_norm=False, **fields):
  adaptation = methods.adaptation_for(method, **{**SMALL, **fields})
  _, params = make(adaptation)
  mask = methods.trainable_mask(params, method, train_layer_norm=train_layer_norm)
  chex.assert_trees_all_equal_structs(mask, jax.tree_util.tree_map(lambda _: True, params))
  flat = traverse_util.flatten_dict(mask)
  return {p for p, m in flat.items() if m}, set(flat)


def test_adamix_trains_its_adapters_and_the_head_only():
  trainable, _ = _trainable('adamix', placement='houlsby')
  adapters = {LAYER0[:1] + (f'layer_{i}',) + site + ('adapter', leaf)
              for i in range(2) for site in (('attention', 'output'), ('output',))
              for leaf in ('down_kernel', 'down_bias', 'up_kernel', 'up_bias')}
  assert trainable == adapters | HEAD


@pytest.mark.parametrize('method', ['lora', 'adamix_lora'])
def test_lora_methods_train_the_factors_and_the_head_only(method):
  trainable, _ = _trainable(method, lora_targets=('query', 'output'))
  factors = {('backbone', f'layer_{i}') + where + (leaf,) for i in range(2)
             for where in (('attention', 'self', 'query'), ('output', 'dense'))
             for leaf in ('lora_a', 'lora_b')}
  assert trainable == factors | HEAD


def test_bitfit_trains_every_bias_including_layer_norm_biases():
  trainable, _ = _trainable('bitfit')
  per_layer = [('attention', 'self', 'query'), ('attention', 'self', 'key'),
               ('attention', 'self', 'value'), ('attention', 'output', 'dense'),
               ('attention', 'output', 'LayerNorm'), ('intermediate_dense',),
               ('output', 'dense'), ('output', 'LayerNorm')]
  biases = {('backbone', f'layer_{i}') + m + ('bias',) for i in range(2) for m in per_layer}
  biases |= {('backbone', 'embeddings', 'LayerNorm', 'bias'), ('backbone', 'pooler', 'bias')}
  assert trainable == biases | HEAD


def test_full_head_only_and_the_layer_norm_flag():
  trainable, everything = _trainable('full')
  assert trainable == everything
  assert _trainable('head_only')[0] == HEAD
  assert _trainable('head_only', train_layer_norm=True)[0] == HEAD | LAYER_NORMS
  trainable, _ = _trainable('adapter', train_layer_norm=True)
  assert LAYER_NORMS <= trainable
  assert LAYER_NORMS.isdisjoint(_trainable('adapter')[0])


def test_method_without_its_parameters_is_rejected():
  _, params = make(AdaptationConfig())
  with pytest.raises(ValueError, match='has none'):
    methods.trainable_mask(params, 'adamix')
  with pytest.raises(ValueError, match='Unknown method'):
    methods.trainable_mask(params, 'prefix_tuning')


def test_adaptation_for_maps_methods_to_kinds():
  assert methods.adaptation_for('adamix').kind == 'adamix'
  assert methods.adaptation_for('bitfit').kind == 'none'
  assert methods.adaptation_for('adapter', placement='pfeiffer').placement == 'ffn'
  assert methods.adaptation_for('adamix_lora', lora_rank=4).lora_rank == 4
  with pytest.raises(ValueError, match='uses kind'):
    methods.adaptation_for('lora', kind='adapter')


def test_partition_and_combine_round_trip_with_disjoint_leaves():
  _, params = make(methods.adaptation_for('adamix', **SMALL))
  mask = methods.trainable_mask(params, 'adamix')
  trainable, frozen = methods.partition(params, mask)
  flat_t, flat_f = traverse_util.flatten_dict(trainable), traverse_util.flatten_dict(frozen)
  assert flat_t.keys().isdisjoint(flat_f.keys())
  assert flat_t.keys() == {p for p, m in traverse_util.flatten_dict(mask).items() if m}
  assert 'adapter' in trainable['backbone']['layer_0']['output']
  assert 'adapter' not in frozen['backbone']['layer_0']['output']
  chex.assert_trees_all_equal(methods.combine(trainable, frozen), params)
  with pytest.raises(ValueError, match='overlap'):
    methods.combine(trainable, params)


def _layer_params(d, f):
  return 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d


def _adapter_params(d, r):
  return d * r + r + r * d + d


def test_roberta_large_adamix_r16_merges_to_0_8m_parameters_0_23_percent():
  d, layers, r = 1024, 24, 16
  adaptation = methods.adaptation_for('adamix', adapter_size=r)  # 4 down experts, up shared
  report = methods.count_from_shapes(ROBERTA_LARGE, adaptation, 'adamix', num_labels=2)
  backbone = (50265 + 514 + 1) * d + 2 * d + layers * _layer_params(d, 4096)
  assert report['backbone'] == backbone
  assert backbone + d * d + d == 355_359_744  # RobertaModel (with pooler): "355M"
  # Before merging: 4 down experts and one shared up projection per layer.
  assert report['added'] == layers * (4 * (d * r + r) + r * d + d) == 1_992_192
  # After merging: one adapter per layer.
  assert report['merged_added'] == report['merged_trainable_backbone'] == (
      layers * _adapter_params(d, r)) == 811_392
  assert round(report['merged_trainable_backbone_pct'], 2) == 0.23
  # The 0.23% counts the adapters only; with the RoBERTa classification head it is 0.53%.
  assert report['merged_head'] == d * d + d + 2 * d + 2
  assert round(report['merged_trainable_pct'], 2) == 0.53


def test_bert_base_adamix_r48_merges_to_0_9m_parameters():
  d, layers, r = 768, 12, 48
  adaptation = methods.adaptation_for('adamix', adapter_size=r)
  report = methods.count_from_shapes(BERT_BASE, adaptation, 'adamix', num_labels=2)
  assert report['backbone'] == 109_482_240  # BertModel, pooler included
  assert report['merged_added'] == layers * _adapter_params(d, r) == 894_528
  assert round(report['merged_trainable_backbone_pct'], 2) == 0.82


def test_report_from_arrays_matches_report_from_shapes():
  adaptation = methods.adaptation_for('adamix_lora', lora_rank=2, num_experts=3, share_up=False)
  _, params = make(adaptation)
  from_arrays = methods.parameter_report(params, 'adamix_lora', adaptation,
                                         lora_merge='mean_delta')
  from_shapes = methods.count_from_shapes(CONFIG, adaptation, 'adamix_lora', num_labels=3,
                                          lora_merge='mean_delta')
  assert from_arrays == from_shapes
  d, r, e = CONFIG.hidden_size, 2, 3
  per_target = e * (d * r + r * d)
  assert from_arrays['added'] == 2 * 2 * per_target  # layers x (query, value)
  # mean_delta keeps every expert's update: a rank-E*r LoRA, the same count.
  assert from_arrays['merged_added'] == 2 * 2 * (d * e * r + e * r * d)
  mean_factors = methods.parameter_report(params, 'adamix_lora', adaptation)
  assert mean_factors['merged_added'] == 2 * 2 * (d * r + r * d)
  with pytest.raises(ValueError, match='uses adaptation kind'):
    methods.parameter_report(params, 'adamix', adaptation)


@pytest.mark.parametrize('method', ['bitfit', 'full', 'head_only'])
def test_report_of_non_adapter_methods(method):
  report = methods.count_from_shapes(CONFIG, methods.adaptation_for(method), method,
                                     num_labels=3)
  assert report['added'] == 0 and report['merged_trainable'] == report['trainable']
  expected = {'full': report['total'], 'head_only': report['head'],
              'bitfit': report['head'] + 16 + 16 + (4 * 16 + 16 + 24 + 16 + 16) * 2}
  assert report['trainable'] == expected[method]
  np.testing.assert_allclose(report['trainable_pct'],
                             100 * report['trainable'] / report['backbone'])


def test_registry_is_what_every_place_asks():
  from adamix_jax import registry
  assert registry.MIXTURES == ('adamix', 'adamix_lora')
  assert {m.name: m.merged for m in registry.METHODS.values() if m.is_mixture} == {
      'adamix': 'adapter', 'adamix_lora': 'lora'}
  with pytest.raises(ValueError, match="Unknown method 'magic'; choose from adamix, "):
    registry.get('magic')
  # Each method's trainable set follows its record: the adapter methods train adapters only.
  for name, method in registry.METHODS.items():
    adaptation = methods.adaptation_for(name)
    assert adaptation.kind == method.kind
    with pytest.raises(TypeError):  # presets are read-only
      method.preset['learning_rate'] = 1.0
