"""Task registry: names, GLUE metrics, selection metrics, custom tasks."""

import pytest

from adamix_jax.data import tasks
from adamix_jax.data.config import default_data_config
from adamix_jax.data.readers import task_from_config
from adamix_jax.data.tasks import TaskSpec, custom_task, get_task, register_task


@pytest.mark.parametrize('alias', ['sst2', 'sst-2', 'SST-2', 'Sst_2'])
def test_get_task_accepts_glue_spellings(alias):
  assert get_task(alias).name == 'sst2'


def test_unknown_task_lists_the_known_ones():
  with pytest.raises(ValueError, match='wnli') as error:
    get_task('wnli')
  for name in ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', 'qnli', 'rte'):
    assert name in str(error.value)


# (metrics, selection metric, eval splits, num_labels) as GLUE reports them.
GLUE_TABLE = {
    'cola': (('mcc',), 'mcc', ('dev',), 2),
    'sst2': (('accuracy',), 'accuracy', ('dev',), 2),
    'mrpc': (('accuracy', 'f1', 'combined'), 'accuracy', ('dev',), 2),
    'qqp': (('accuracy', 'f1', 'combined'), 'accuracy', ('dev',), 2),
    'stsb': (('pearson', 'spearman', 'combined'), 'pearson', ('dev',), 1),
    'mnli': (('accuracy',), 'accuracy', ('dev_matched', 'dev_mismatched'), 3),
    'qnli': (('accuracy',), 'accuracy', ('dev',), 2),
    'rte': (('accuracy',), 'accuracy', ('dev',), 2),
}


@pytest.mark.parametrize('name', sorted(GLUE_TABLE))
def test_registry_has_glue_metrics(name):
  spec = get_task(name)
  metrics, selection, splits, num_labels = GLUE_TABLE[name]
  assert (spec.metrics, spec.selection_metric, spec.eval_splits,
          spec.num_labels) == (metrics, selection, splits, num_labels)
  assert spec.is_regression == (name == 'stsb')
  assert spec.selection_split == splits[0]
  assert spec.is_pair == (name not in ('cola', 'sst2'))


def test_labels_follow_tfds_order():
  # read_tfds maps tfds class ids straight onto these indices.
  assert get_task('mnli').labels == ('entailment', 'neutral', 'contradiction')
  assert get_task('rte').labels == ('entailment', 'not_entailment')
  assert get_task('mrpc').labels == ('0', '1')  # F1 is on class 1 = paraphrase
  assert get_task('stsb').labels is None


@pytest.mark.parametrize('kwargs, message', [
    (dict(metrics=('accuracy',), selection_metric='f1'), 'selection metric'),
    (dict(metrics=('accuracy', 'bleu'), selection_metric='accuracy'), 'bleu'),
    (dict(metrics=('pearson',), selection_metric='pearson'), 'correlation'),
])
def test_taskspec_rejects_inconsistent_metrics(kwargs, message):
  with pytest.raises(ValueError, match=message):
    TaskSpec('bad', ('text',), ('a', 'b'), **kwargs)


def test_taskspec_rejects_classification_metric_on_regression():
  with pytest.raises(ValueError, match='regression'):
    TaskSpec('bad', ('a', 'b'), None, ('accuracy',), 'accuracy')


def test_custom_task_defaults():
  regression = custom_task('score', ['a', 'b'], None)
  assert (regression.metrics, regression.selection_metric,
          regression.num_labels) == (('pearson', 'spearman'), 'pearson', 1)
  binary = custom_task('spam', ['text'], ['ham', 'spam'])
  assert binary.metrics == ('accuracy', 'f1') and binary.num_labels == 2
  three = custom_task('topic', ['text'], ['a', 'b', 'c'], eval_splits=['val'])
  assert three.metrics == ('accuracy',) and three.eval_splits == ('val',)


def test_register_task_makes_it_findable(monkeypatch):
  monkeypatch.setattr(tasks, '_REGISTRY', dict(tasks._REGISTRY))
  spec = register_task(custom_task('My-Topics', ['text'], ['x', 'y', 'z']))
  assert get_task('my_topics') is spec
  with pytest.raises(ValueError, match='already registered'):
    register_task(custom_task('my-topics', ['text'], ['x', 'y']))
  register_task(custom_task('my-topics', ['text'], ['x', 'y']), overwrite=True)
  assert get_task('MY-TOPICS').num_labels == 2


def test_task_from_config_custom_keeps_registered_labels_and_uses_eval_files():
  cfg = default_data_config()
  cfg.task, cfg.source = 'rte', 'custom'
  cfg.eval_files = ('val=/data/v.csv', '/data/test2.csv')
  spec = task_from_config(cfg)
  assert spec.labels == get_task('rte').labels
  assert spec.eval_splits == ('val', 'test2')
  cfg.labels = ('yes', 'no')
  with pytest.raises(ValueError, match='conflicts'):
    task_from_config(cfg)


def test_task_from_config_builds_a_new_task():
  cfg = default_data_config()
  cfg.task, cfg.source = 'reviews', 'custom'
  cfg.text_columns, cfg.labels = ('body',), ('neg', 'pos', 'mixed')
  cfg.metrics, cfg.selection_metric = ('accuracy',), 'accuracy'
  spec = task_from_config(cfg)
  assert (spec.name, spec.text_columns, spec.labels, spec.eval_splits) == (
      'reviews', ('body',), ('neg', 'pos', 'mixed'), ('dev',))


@pytest.mark.parametrize('fields, message', [
    ({}, r"needs data.labels .*or data.regression=True"),
    ({'labels': ('neg,pos',)}, r"names one class"),
    ({'labels': ('neg', 'pos'), 'regression': True}, r"takes no data.labels"),
])
def test_custom_task_says_classes_or_regression(fields, message):
  """A custom task without labels was silently a regression task, scored by Pearson."""
  cfg = default_data_config()
  cfg.task, cfg.source, cfg.text_columns = 'reviews', 'custom', ('body',)
  for key, value in fields.items():
    cfg[key] = value
  with pytest.raises(ValueError, match=message):
    task_from_config(cfg)
  cfg.labels, cfg.regression = None, True
  assert task_from_config(cfg).is_regression


def test_custom_labels_can_be_set_on_the_command_line():
  """data.labels was None, a type ml_collections refuses to override from the command line."""
  import subprocess
  import sys
  from pathlib import Path
  script = ('import sys\n'
            'from absl import flags\n'
            'from ml_collections import config_flags\n'
            "c = config_flags.DEFINE_config_file('config')\n"
            'flags.FLAGS(sys.argv)\n'
            'print(repr(c.value.data.labels))\n')
  out = subprocess.run([sys.executable, '-c', script, '--config=configs/tiny.py',
                        "--config.data.labels=('neg', 'pos')"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "('neg', 'pos')"
