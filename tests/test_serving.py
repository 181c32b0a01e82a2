"""Serving many exports over one backbone: every task's rows, mixed and shuffled in one
batch, equal its own export's single-task predictions; exports of another base are refused;
the request batcher answers each request with its own rows."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import traverse_util

from adamix_jax import export, methods, predict, prompts, serving
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.data import SAMPLES_DIR, pipeline
from adamix_jax.data.formats import Example
from adamix_jax.data.tasks import custom_task
from adamix_jax.encoder import EncoderConfig
from adamix_jax.model import Model, init_params

MAX_LENGTH = 24

# (name, method, merged method, adaptation, labels (None: regression), text columns, head,
# pooling): bottleneck adapters of two sizes and placements, LoRA of two ranks, targets and
# scales, 2/3/4 labels, a regression head, a prompt head (the MLM checkpoint has no pooler:
# the classifiers mean-pool).
TASKS = (
    ('sentiment', 'adapter', 'adapter', AdaptationConfig('adapter', adapter_size=4),
     ('neg', 'pos'), ('sentence',), 'classifier', 'mean'),
    ('topic', 'adamix', 'adapter',
     AdaptationConfig('adapter', adapter_size=8, placement='houlsby'),
     ('a', 'b', 'c'), ('sentence',), 'classifier', 'mean'),
    ('score', 'lora', 'lora', AdaptationConfig('lora', lora_rank=2, lora_alpha=16.0),
     None, ('sentence',), 'classifier', 'mean'),
    ('nli', 'adamix_lora', 'lora',
     AdaptationConfig('lora', lora_rank=4, lora_alpha=8.0,
                      lora_targets=('query', 'key', 'output')),
     ('w', 'x', 'y', 'z'), ('premise', 'hypothesis'), 'classifier', 'mean'),
    ('prompted', 'adapter', 'adapter', AdaptationConfig('adapter', adapter_size=4),
     ('0', '1'), ('sentence',), 'prompt', 'cls'),
)
PROMPT = {'template': '<S1> It was [MASK].', 'label_words': {'0': 'terrible', '1': 'great'}}


def write_random_export(out: Path, base: Path, name, method, merged, adaptation, labels,
                        text_columns, head, pooling, seed: int) -> Path:
  """An export whose trained tensors are random (LoRA's B and the heads included), so that
  every task predicts differently from every other."""
  task = custom_task(name, text_columns, labels)
  word_ids = ()
  if head == 'prompt':
    tokenizer = pipeline.load_tokenizer(base)
    word_ids = prompts.label_word_ids(prompts.PromptSpec.from_config(PROMPT), task,
                                      tokenizer)
  config = EncoderConfig.from_hf_dict(json.loads((base / 'config.json').read_text()))
  model = Model(config, adaptation, head=head, num_labels=task.num_labels,
                label_word_ids=word_ids, pooling=pooling)
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
  mask = traverse_util.flatten_dict(methods.trainable_mask(shapes, merged))
  rng = np.random.RandomState(seed)
  tensors = {'/'.join(k): (0.3 * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in traverse_util.flatten_dict(shapes).items() if mask[k]}
  return export.write_export(out, tensors, base_checkpoint=str(base), method=method,
                             merged_method=merged, adaptation=adaptation, task=task,
                             max_length=MAX_LENGTH, head=head, label_word_ids=word_ids,
                             pooling=pooling, prompt=PROMPT if head == 'prompt' else None)


@pytest.fixture(scope='module')
def exports(tiny_mlm_checkpoint, tmp_path_factory) -> dict[str, Path]:
  root = tmp_path_factory.mktemp('serving')
  return {spec[0]: Path(write_random_export(root / spec[0], tiny_mlm_checkpoint, *spec,
                                            seed=i))
          for i, spec in enumerate(TASKS)}


@pytest.fixture(scope='module')
def served(exports):
  return serving.MultiTaskPredictor(exports, batch_size=8, bucket_size=8).load()


def sentences(n: int, offset: int = 0) -> list[str]:
  lines = (SAMPLES_DIR / 'SST-2' / 'dev.tsv').read_text().splitlines()[1:]
  return [l.split('\t')[0] for l in lines[offset:offset + n]]


def examples_for(name: str, n: int, offset: int = 0) -> list[Example]:
  texts = sentences(n + 1, offset)
  two = len(dict((t[0], t[5]) for t in TASKS)[name]) == 2
  return [Example((texts[i], texts[i + 1]) if two else (texts[i],), 0) for i in range(n)]


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
