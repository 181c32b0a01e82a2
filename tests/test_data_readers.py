"""Readers: real GLUE files, bundled samples, tfds, custom files, bad input."""

import importlib.util
import json
import logging
import re
from pathlib import Path
from unittest import mock

import pytest

from adamix_jax.data import SAMPLES_DIR
from adamix_jax.data.config import default_data_config
from adamix_jax.data.readers import (DataError, Example, load_examples,
                                     read_custom, read_glue_tsv, read_tfds)
from adamix_jax.data.tasks import custom_task, get_task

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
MAKE_SAMPLES = SAMPLES_DIR.parent / 'make_samples.py'


def _needs_shared():
  if not (SHARED / 'glue').is_dir():
    pytest.skip(f'{SHARED}/glue is absent (the shared benchmark data lives '
                'beside the project only on the development machines).')


def _config(task, **fields):
  cfg = default_data_config()
  cfg.task = task
  for key, value in fields.items():
    setattr(cfg, key, value)
  return cfg


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding='utf-8')
  return path


# ----------------------------------------------------------------------------
# Real files and bundled samples.

CANONICAL_ROWS = [('sst2', 'train', 67349), ('sst2', 'dev', 872),
                  ('rte', 'train', 2490), ('rte', 'dev', 277),
                  ('mrpc', 'train', 3668), ('mrpc', 'dev', 408),
                  ('qnli', 'dev', 5463), ('cola', 'dev', 1043),
                  ('stsb', 'dev', 1500)]


@pytest.mark.parametrize('task, split, rows', CANONICAL_ROWS)
def test_real_glue_files_have_canonical_row_counts(task, split, rows):
  _needs_shared()
  spec, examples = load_examples(_config(task, data_dir=str(SHARED / 'glue')),
                                 split)
  assert len(examples) == rows
  assert all(len(e.texts) == len(spec.text_columns) for e in examples)
  if not spec.is_regression:  # both classes really occur
    assert {e.label for e in examples} == set(range(spec.num_labels))


def test_real_mrpc_keeps_stray_quotes_inside_fields():
  _needs_shared()
  _, examples = load_examples(_config('mrpc', data_dir=str(SHARED / 'glue')),
                              'dev')
  assert examples[0] == Example(
      ("He said the foodservice pie business doesn't fit the company's "
       'long-term growth strategy.',
       '"The foodservice pie business does not fit our long-term growth '
       'strategy.'), 1)


def test_real_stsb_scores_are_floats_in_range():
  _needs_shared()
  _, examples = load_examples(_config('stsb', data_dir=str(SHARED / 'glue')),
                              'dev')
  assert examples[0].label == 5.0 and examples[1].label == 4.75
  assert min(e.label for e in examples) == 0.0
  assert max(e.label for e in examples) == 5.0


@pytest.mark.parametrize('task', ['cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli',
                                  'qnli', 'rte'])
def test_bundled_samples_cover_every_task_and_split(task):
  spec = get_task(task)
  for split in ('train',) + spec.eval_splits:
    got_spec, examples = load_examples(_config(task), split)
    assert got_spec == spec
    assert len(examples) >= 12, (task, split)
    if not spec.is_regression:
      assert len({e.label for e in examples}) == spec.num_labels, (task, split)


def test_bundled_sst2_sizes():
  assert len(load_examples(_config('sst2'), 'train')[1]) == 8000
  assert len(load_examples(_config('sst2'), 'dev')[1]) == 872


def test_bundled_samples_match_their_documented_recipe():
  _needs_shared()
  spec = importlib.util.spec_from_file_location('make_samples', MAKE_SAMPLES)
  make_samples = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_samples)
  for task, name, source, k, header in make_samples.PLAN:
    text = (SHARED / source).read_bytes().decode('utf-8')
    expected = make_samples.sample_file(text, k, header)
    assert (SAMPLES_DIR / task / name).read_bytes().decode('utf-8') == expected


def test_max_train_examples_cuts_train_only():
  cfg = _config('sst2', max_train_examples=100)
  assert len(load_examples(cfg, 'train')[1]) == 100
  assert len(load_examples(cfg, 'dev')[1]) == 872


def test_mnli_dev_layout_reads_gold_label():
  _, examples = load_examples(_config('mnli'), 'dev_mismatched')
  assert examples[1] == Example(('My brother never learned how to drive.',
                                 'Her brother drives a taxi.'), 2)


def test_unknown_split_is_rejected():
  with pytest.raises(ValueError, match='dev_matched'):
    load_examples(_config('mnli'), 'dev')


# ----------------------------------------------------------------------------
# GLUE layout quirks, on small files written here.


def test_stray_quotes_do_not_merge_rows(tmp_path):
  path = _write(tmp_path, 'train.tsv',
                'sentence\tlabel\n"an opening quote only \t1\n'
                'next row \t0\nsays ""hi"" \t1\n')
  assert read_glue_tsv('sst2', path) == [
      Example(('"an opening quote only ',), 1), Example(('next row ',), 0),
      Example(('says ""hi"" ',), 1)]


def test_cola_has_no_header_and_no_final_newline(tmp_path):
  path = _write(tmp_path, 'dev.tsv', 'gj04\t1\t\tGood one.\ngj04\t0\t*\tBad one')
  assert read_glue_tsv('cola', path) == [Example(('Good one.',), 1),
                                         Example(('Bad one',), 0)]


def test_mrpc_bom_header_is_understood(tmp_path):
  path = tmp_path / 'dev.tsv'
  path.write_bytes('\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n'
                   '1\t1\t2\tA b.\tA c.\r\n'.encode('utf-8'))
  assert read_glue_tsv('mrpc', path) == [Example(('A b.', 'A c.'), 1)]


# ----------------------------------------------------------------------------
# Bad input: every message names the file and the line (or column) at fault.


def test_missing_file_is_named(tmp_path):
  missing = tmp_path / 'SST-2' / 'train.tsv'
  with pytest.raises(DataError, match=re.escape(f'{missing}: no such file')):
    load_examples(_config('sst2', data_dir=str(tmp_path)), 'train')


def test_missing_column_is_named(tmp_path):
  path = _write(tmp_path, 'train.tsv', 'sentence\tpolarity\nfine\t1\n')
  with pytest.raises(DataError,
                     match=re.escape(f"{path}:1: missing column(s) ['label']")):
    read_glue_tsv('sst2', path)


def test_label_outside_label_set_names_line(tmp_path):
  path = _write(tmp_path, 'train.tsv', 'sentence\tlabel\nfine\t1\nodd\t2\n')
  with pytest.raises(DataError, match=re.escape(f"{path}:3: label '2' is not")):
    read_glue_tsv('sst2', path)


def test_non_numeric_score_names_line(tmp_path):
  header = ('index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t'
            'sentence1\tsentence2\tscore\n')
  path = _write(tmp_path, 'dev.tsv', header +
                '0\tg\tf\t2012\t0\tnone\tnone\tA a.\tA b.\t4.2\n'
                '1\tg\tf\t2012\t1\tnone\tnone\tB a.\tB b.\tfive\n')
  with pytest.raises(DataError, match=re.escape(
      f"{path}:3: non-numeric regression score 'five'")):
    read_glue_tsv('stsb', path)


def test_empty_text_names_line_and_column(tmp_path):
  path = _write(tmp_path, 'dev.tsv', 'index\tquestion\tsentence\tlabel\n'
                '0\tWhy?\tBecause.\tentailment\n1\tHow?\t  \tentailment\n')
  with pytest.raises(DataError, match=re.escape(
      f"{path}:3: empty text in column 'sentence'")):
    read_glue_tsv('qnli', path)


def test_wrong_field_count_names_line(tmp_path):
  path = _write(tmp_path, 'train.tsv', 'sentence\tlabel\nok\t1\nextra\ttab\t0\n')
  with pytest.raises(DataError, match=re.escape(
      f'{path}:3: 3 tab-separated fields, expected 2')):
    read_glue_tsv('sst2', path)


def test_skip_bad_rows_counts_and_reports(tmp_path, caplog):
  path = _write(tmp_path, 'train.tsv',
                'sentence\tlabel\nok\t1\nbad\t7\n\t0\nfine\t0\n')
  with caplog.at_level(logging.WARNING):
    examples = read_glue_tsv('sst2', path, skip_bad_rows=True)
  assert examples == [Example(('ok',), 1), Example(('fine',), 0)]
  report = caplog.text
  assert f'Skipped 2 bad rows of {path}' in report
  assert f'{path}:3:' in report and f'{path}:4:' in report


def test_header_only_file_is_an_error_not_an_empty_split(tmp_path):
  (tmp_path / 'SST-2').mkdir()
  path = _write(tmp_path, 'SST-2/dev.tsv', 'sentence\tlabel\n')
  with pytest.raises(DataError, match=re.escape(f"{path}: no examples")):
    load_examples(_config('sst2', data_dir=str(tmp_path)), 'dev')


def test_skip_bad_rows_does_not_hide_missing_columns(tmp_path):
  (tmp_path / 'SST-2').mkdir()
  _write(tmp_path, 'SST-2/train.tsv', 'text\tlabel\nok\t1\n')
  with pytest.raises(DataError, match='missing column'):
    load_examples(_config('sst2', data_dir=str(tmp_path), skip_bad_rows=True),
                  'train')


# ----------------------------------------------------------------------------
# Bring your own data, configured only through the data config.


def _custom_config(task, train_file, **fields):
  return _config(task, source='custom', train_file=str(train_file), **fields)


def test_custom_csv_with_quotes_and_multiline_fields(tmp_path):
  path = _write(tmp_path, 'train.csv', 'id,text,topic\n'
                '1,"Hello, world",greeting\n'
                '2,"two\nlines",other\n'
                '3,plain,nonsense\n')
  cfg = _custom_config('topics', path, text_columns=('text',),
                       label_column='topic', labels=('greeting', 'other'))
  with pytest.raises(DataError, match=re.escape(
      f"{path}:5: label 'nonsense' is not in the label set")):
    load_examples(cfg, 'train')  # line 5: the quoted newline spans lines 3-4
  cfg.skip_bad_rows = True
  spec, examples = load_examples(cfg, 'train')
  assert spec.labels == ('greeting', 'other')
  assert examples == [Example(('Hello, world',), 0), Example(('two\nlines',), 1)]


def test_custom_jsonl_regression_pairs(tmp_path):
  train = _write(tmp_path, 'train.jsonl',
                 '{"a": "x", "b": "y", "sim": 0.5}\n'
                 '{"a": "p", "b": "q", "sim": "3"}\n')
  dev = _write(tmp_path, 'valid.jsonl', '{"a": "x", "b": "z", "sim": 1}\n')
  cfg = _custom_config('similarity', train, text_columns=('a', 'b'),
                       label_column='sim', eval_files=(str(dev),), regression=True)
  spec, examples = load_examples(cfg, 'train')
  assert spec.is_regression and spec.eval_splits == ('valid',)
  assert spec.metrics == ('pearson', 'spearman')
  assert examples == [Example(('x', 'y'), 0.5), Example(('p', 'q'), 3.0)]
  assert load_examples(cfg, 'valid')[1] == [Example(('x', 'z'), 1.0)]
  with pytest.raises(ValueError, match="no file for eval split 'dev': set data.eval_files"):
    load_examples(_custom_config('similarity', train, text_columns=('a', 'b'),
                                 label_column='sim', regression=True), 'dev')


def test_custom_jsonl_integer_labels_match_label_names(tmp_path):
  path = _write(tmp_path, 'd.jsonl', '{"t": "a", "y": 1}\n{"t": "b", "y": 0}\n')
  examples = read_custom(path, '', ['t'], 'y', custom_task('c', ['t'], ['0', '1']))
  assert [e.label for e in examples] == [1, 0]


@pytest.mark.parametrize('text, message', [
    ('{"t": "a", "y": 1}\n{"t": "b"}\n', ":2: no column 'y'"),
    ('{"t": "a", "y": 1}\n{"t": "b", "y": 1\n', ':2: invalid JSON'),
    ('{"t": "a", "y": 1}\n{"t": "", "y": 1}\n', ":2: empty text in column 't'"),
    ('{"t": "a", "y": 1}\n{"t": 5, "y": 1}\n', ":2: text column 't' holds int"),
    ('{"t": "a", "y": true}\n', ":1: non-numeric regression score True"),
])
def test_custom_jsonl_errors_name_file_and_line(tmp_path, text, message):
  path = _write(tmp_path, 'd.jsonl', text)
  with pytest.raises(DataError, match=re.escape(f'{path}{message}')):
    read_custom(path, 'jsonl', ['t'], 'y', custom_task('r', ['t'], None))


def test_custom_headerless_tsv_with_column_names(tmp_path):
  # The LiST few-shot SST-2 files: 'sentence<TAB>label', no header.
  path = _write(tmp_path, 'train.tsv', 'a "great" film\t1\ndull\t0\n')
  cfg = _custom_config('sst2', path, column_names=('sentence', 'label'))
  spec, examples = load_examples(cfg, 'train')
  assert spec.metrics == get_task('sst2').metrics
  assert examples == [Example(('a "great" film',), 1), Example(('dull',), 0)]


def test_custom_missing_column_and_unknown_format(tmp_path):
  path = _write(tmp_path, 'train.csv', 'sentence,label\nok,1\n')
  with pytest.raises(DataError, match=re.escape(
      f"{path}:1: missing column(s) ['text']")):
    load_examples(_custom_config('c', path, text_columns=('text',),
                                 labels=('0', '1')), 'train')
  other = _write(tmp_path, 'train.parquet', '')
  with pytest.raises(DataError, match=re.escape(f"{other}: unknown format")):
    load_examples(_custom_config('c', other, text_columns=('text',),
                                 labels=('0', '1')), 'train')


def test_custom_missing_file_is_named(tmp_path):
  cfg = _custom_config('c', tmp_path / 'nope.csv', text_columns=('text',),
                       labels=('0', '1'))
  with pytest.raises(DataError, match=re.escape(f'{tmp_path / "nope.csv"}: no '
                                                'such file')):
    load_examples(cfg, 'train')


# ----------------------------------------------------------------------------
# tensorflow-datasets.

_HAS_TF = importlib.util.find_spec('tensorflow') is not None


@pytest.mark.skipif(not _HAS_TF, reason='TensorFlow is not installed.')
def test_tfds_unprepared_says_how_to_prepare_without_downloading(tmp_path):
  with pytest.raises(DataError) as error:
    read_tfds('sst2', 'train', data_dir=str(tmp_path))
  message = str(error.value)
  assert 'glue/sst2 is not prepared' in message
  assert 'tfds build glue/sst2' in message and 'download=True' in message
  assert not (tmp_path / 'downloads').exists()  # nothing was fetched


@pytest.mark.skipif(not _HAS_TF, reason='TensorFlow is not installed.')
def test_tfds_reads_the_same_examples_as_the_tsv(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # Prepare glue/sst2 offline from a slice of the bundled sample: tfds' own
  # GLUE builder parses the files a "download" would have produced.
  source = tmp_path / 'glue_data' / 'SST-2'
  source.mkdir(parents=True)
  for split, rows in (('train', 30), ('dev', 10)):
    lines = (SAMPLES_DIR / 'SST-2' / f'{split}.tsv').read_text().split('\n')
    (source / f'{split}.tsv').write_text('\n'.join(lines[:rows + 1]) + '\n')
  (source / 'test.tsv').write_text('index\tsentence\n0\tunlabelled\n')
  with mock.patch.object(tfds.download.DownloadManager, 'download_and_extract',
                         lambda self, url: str(source.parent)):
    tfds.builder('glue/sst2', data_dir=str(tmp_path / 'tfds')
                 ).download_and_prepare()
  for split in ('train', 'dev'):
    tfds_cfg = _config('sst2', source='tfds', data_dir=str(tmp_path / 'tfds'))
    tsv_cfg = _config('sst2', data_dir=str(source.parent))
    from_tfds = load_examples(tfds_cfg, split)[1]
    assert from_tfds == load_examples(tsv_cfg, split)[1]
    assert len(from_tfds) == (30 if split == 'train' else 10)


def test_custom_csv_blank_lines_at_the_end_are_fine_inside_are_named(tmp_path):
  task = custom_task('c', ['t'], ['0', '1'])
  path = _write(tmp_path, 'end.csv', 't,y\na,1\nb,0\n\n\n')
  assert [e.label for e in read_custom(path, '', ['t'], 'y', task)] == [1, 0]
  path = _write(tmp_path, 'inside.csv', 't,y\na,1\n\nb,0\n')
  with pytest.raises(DataError, match=re.escape(f'{path}:3: blank line.')):
    read_custom(path, '', ['t'], 'y', task)
  assert [e.label for e in read_custom(path, '', ['t'], 'y', task, skip_bad_rows=True)] == [1, 0]
