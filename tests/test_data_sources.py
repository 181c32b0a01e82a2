"""The data-source registry: one record per source that every caller asks; the custom
source's table reader, which prediction shares."""

import re
from types import MappingProxyType

import pytest

from adamix_jax.data import custom, sources
from adamix_jax.data.config import default_data_config
from adamix_jax.data.formats import DataError, Example
from adamix_jax.data.tasks import custom_task, get_task


def _config(source, **fields):
  cfg = default_data_config()
  cfg.source = source
  for key, value in fields.items():
    setattr(cfg, key, value)
  return cfg


def test_every_source_is_found_by_its_name():
  assert sources.NAMES == ('glue_tsv', 'tfds', 'custom', 'fewshot_list', 'lmbff', 'sample')
  for name in sources.NAMES:
    assert sources.get(name).name == name
  with pytest.raises(ValueError, match=re.escape(
      "Unknown data.source 'parquet'; expected glue_tsv, tfds, custom, fewshot_list, lmbff "
      'or sample.')):
    sources.load_examples(_config('parquet'), 'train')


def test_what_the_records_say():
  full = {n for n, s in sources.SOURCES.items() if s.full_training_set}
  seeded = {n for n, s in sources.SOURCES.items() if s.split_seed}
  assert full == {'glue_tsv', 'tfds', 'custom'}
  assert seeded == {'fewshot_list', 'lmbff', 'sample'}
  with pytest.raises(ValueError, match=re.escape(
      "data.sample_source='lmbff': sample from a full training set (glue_tsv, tfds or "
      'custom).')):
    sources.load_examples(_config('sample', sample_source='lmbff', fewshot_k=4), 'train')


def test_the_runs_seed_picks_the_split_of_the_seeded_sources_only():
  from adamix_jax import runs  # pylint: disable=import-outside-toplevel
  from configs import tiny  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.seed = 3
  for name in sources.NAMES:
    config.data.source, config.data.fewshot_seed = name, 0
    assert runs.data_config(config).fewshot_seed == (3 if sources.get(name).split_seed
                                                     else 0), name
  config.data.source, config.data.fewshot_seed = 'sample', 5
  assert runs.data_config(config).fewshot_seed == 5


def test_adding_a_source_is_one_entry(monkeypatch):
  spec = custom_task('inline', ['text'], ['no', 'yes'], eval_splits=('dev',))
  rows = {'train': [Example(('a',), 1), Example(('b',), 0)], 'dev': [Example(('c',), 1)]}
  inline = sources.DataSource('inline', lambda cfg: spec,
                              lambda cfg, task, split: (rows[split], f'inline {split}'))
  monkeypatch.setattr(sources, 'SOURCES', MappingProxyType({**sources.SOURCES,
                                                            'inline': inline}))
  cfg = _config('inline', max_train_examples=1)
  assert sources.task_from_config(cfg) is spec
  assert sources.load_examples(cfg, 'train') == (spec, rows['train'][:1])
  assert sources.load_examples(cfg, 'dev')[1] == rows['dev']
  with pytest.raises(ValueError, match="has no split 'test'"):
    sources.load_examples(cfg, 'test')
  rows['dev'] = []
  with pytest.raises(DataError, match=re.escape("inline dev: no examples in split 'dev'.")):
    sources.load_examples(cfg, 'dev')


def test_file_layout_records_the_custom_files_columns(tmp_path):
  assert sources.file_layout(_config('glue_tsv')) is None
  assert sources.file_layout(_config('fewshot_list')) is None
  cfg = _config('custom', format='csv', column_names=('label', 'sentence'))
  expected = {'format': 'csv', 'column_names': ['label', 'sentence']}
  assert sources.file_layout(cfg) == expected
  # A sample of custom files is read as those files are.
  assert sources.file_layout(_config('sample', sample_source='custom', format='csv',
                                     column_names=('label', 'sentence'))) == expected
  assert sources.file_layout(_config('custom'))['column_names'] == []


def test_read_table_with_and_without_a_header(tmp_path):
  headed = tmp_path / 'headed.csv'
  headed.write_text('label,sentence\n1,"good, really"\n0,bad\n')
  bare = tmp_path / 'bare.csv'
  bare.write_text('1,"good, really"\n0,bad\n')
  task = get_task('sst2')
  from_header = custom.table_examples(custom.read_table(headed), task, ['sentence'], 'label')
  table = custom.read_table(bare, column_names=('label', 'sentence'))
  assert table.header == ['label', 'sentence']
  assert custom.table_examples(table, task, ['sentence'], 'label') == from_header == [
      Example(('good, really',), 1), Example(('bad',), 0)]
  # No label column: placeholder labels, and no column check for it.
  assert custom.table_examples(custom.read_table(bare, column_names=('x', 'sentence')),
                               task, ['sentence'], None) == [
                                   Example(('good, really',), 0), Example(('bad',), 0)]


def test_has_column_of_jsonl_keeps_every_row(tmp_path):
  path = tmp_path / 'rows.jsonl'
  path.write_text('{"sentence": "a", "label": "1"}\n{"sentence": "b", "label": "0"}\n')
  table = custom.read_table(path)
  assert table.header is None
  assert table.has_column('label') and not table.has_column('gold')
  assert custom.table_examples(table, get_task('sst2'), ['sentence'], 'label') == [
      Example(('a',), 1), Example(('b',), 0)]
