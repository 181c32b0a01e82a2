"""Serving many exports over one backbone: every task's rows, mixed and shuffled in one
batch, equal its own export's single-task predictions; exports of another base are refused;
the request batcher answers each request with its own rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adamix_jax import export, predict, serving
from adamix_jax.data.formats import Example
from serving_exports import TASKS, examples_for, write_exports, write_random_export


@pytest.fixture(scope='module')
def exports(tiny_mlm_checkpoint, tmp_path_factory) -> dict[str, Path]:
  return write_exports(tmp_path_factory.mktemp('serving'), tiny_mlm_checkpoint)


@pytest.fixture(scope='module')
def served(exports):
  return serving.MultiTaskPredictor(exports, batch_size=8, bucket_size=8).load()


def test_every_tasks_rows_in_a_shuffled_mix_equal_its_own_exports_predictions(exports,
                                                                              served):
  per_task = {name: examples_for(name, 7, offset=3 * i) for i, name in enumerate(exports)}
  expected = {name: predict.Predictor(d, batch_size=4, bucket_size=8).predict(per_task[name])
              for name, d in exports.items()}
  items = [(name, e) for name, examples in per_task.items() for e in examples]
  order = np.random.RandomState(0).permutation(len(items))
  outputs = served.predict_items([items[i] for i in order])
  got = {name: [None] * len(per_task[name]) for name in exports}
  for out, i in zip(outputs, order):
    name, example = items[i]
    got[name][per_task[name].index(example)] = out
  for name in exports:
    np.testing.assert_allclose(np.stack(got[name]), expected[name], atol=1e-5, err_msg=name)
  # Shapes as the single-task predictor gives them: labels, or one score.
  assert np.stack(got['nli']).shape == (7, 4) and np.stack(got['score']).shape == (7,)
  # The test can fail: the same text under two tasks with as many labels predicts apart.
  same = examples_for('sentiment', 4)
  gap = np.abs(served.predict('sentiment', same) - served.predict('prompted', same)).max()
  assert gap > 1e-3


def test_one_task_alone_equals_its_rows_in_a_mix(served):
  alone = served.predict('topic', examples_for('topic', 5))
  mixed = served.predict_items([('score', e) for e in examples_for('score', 3)] +
                               [('topic', e) for e in examples_for('topic', 5)])
  np.testing.assert_allclose(np.stack(mixed[3:]), alone, atol=1e-5)


def test_lengths_and_batch_size_give_a_fixed_shape_set(served):
  shapes = served.warm_up()
  assert shapes == 3  # max length 24, buckets of 8
  before = served.compiled_shapes()
  served.predict_items([('nli', e) for e in examples_for('nli', 11)] +
                       [('sentiment', Example(('word ' * 40,), 0))])
  assert served.compiled_shapes() == before


def test_tasks_describe_labels_methods_and_sizes(served):
  described = {t.name: t.describe() for t in served.tasks.values()}
  assert described['topic']['method'] == 'adamix' and described['topic']['labels'] == [
      'a', 'b', 'c']
  assert described['score']['regression'] and described['score']['labels'] is None
  assert described['nli']['text_columns'] == ['premise', 'hypothesis']
  assert 0 < described['score']['size_bytes'] < described['topic']['size_bytes']
  memory = served.memory_bytes()
  assert memory['stacked'] < memory['frozen']


def test_exports_of_another_base_checkpoint_are_refused(exports, tiny_checkpoint,
                                                        tmp_path):
  other = write_random_export(tmp_path / 'other', tiny_checkpoint, *TASKS[0], seed=9)
  with pytest.raises(serving.ServingError) as e:
    serving.MultiTaskPredictor({'a': exports['sentiment'], 'b': other})
  message = str(e.value)
  assert str(other) in message and str(tiny_checkpoint) in message
  assert str(export.read_info(exports['sentiment'])['base_checkpoint']) in message


def test_two_exports_of_one_task_need_names(exports):
  with pytest.raises(serving.ServingError, match='name them'):
    serving.MultiTaskPredictor([exports['topic'], exports['topic']])


def test_unknown_task_is_refused_by_name(served):
  with pytest.raises(serving.ServingError, match="unknown task 'nope'"):
    served.predict_items([('nope', Example(('a',), 0))])


def test_batcher_answers_each_request_with_its_own_rows(served):
  batcher = serving.RequestBatcher(served, max_wait_s=0.05)
  try:
    requests = [[(name, e) for e in examples_for(name, 1 + i % 3, offset=i)]
                for i, name in enumerate(list(served.tasks) * 2)]
    futures = [batcher.submit(r) for r in requests]
    bad = batcher.submit([('nope', Example(('a',), 0))])
    for request, future in zip(requests, futures):
      got = future.result(timeout=60)
      want = served.predict_items(request)
      for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)
    with pytest.raises(serving.ServingError):
      bad.result(timeout=60)
  finally:
    batcher.close()


def test_multitask_benchmark_counts_one_backbone_against_n_models(tiny_mlm_checkpoint,
                                                                  tmp_path):
  from benchmarks import multitask  # pylint: disable=import-outside-toplevel
  exports = multitask.write_exports(tmp_path, tiny_mlm_checkpoint, 2, 'mixed', max_length=8)
  row = multitask.bench(exports, 30522, batch=4, length=8, rounds=1)
  singles = [predict.Predictor(d).memory_bytes() for d in exports.values()]
  assert row['separate_bytes'] == sum(singles)
  backbone = row['shared_bytes'] - row['stacked_bytes']
  assert backbone <= min(singles) and row['shared_bytes'] < row['separate_bytes']
  assert row['methods'] == ['adamix', 'lora']  # every other task LoRA
  for key in ('mixed_s', 'separate_s', 'gather_s', 'single_s'):
    assert len(row['samples'][key.removesuffix('_s')]) == 1 and row[key] > 0
  text = multitask.render([{**row, 'mix': 'mixed'}], 'Machine: here.')
  assert text.count('\n| mixed | 2 |') == 1
