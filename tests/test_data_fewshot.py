"""Few-shot data: LiST and LM-BFF split folders, the bundled LiST sample, K-shot sampling."""

import importlib.util
from pathlib import Path

import pytest

from adamix_jax.data import fewshot
from adamix_jax.data.config import default_data_config
from adamix_jax.data.readers import DataError, Example, load_examples, task_from_config
from adamix_jax.data.tasks import get_task

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
MAKE_SAMPLES = fewshot.LIST_SAMPLES_DIR.parent / 'make_samples.py'

LIST_TASKS = ('mnli', 'qqp', 'rte', 'sst2', 'subj', 'mpqa')
# Full test files of the LiST and LM-BFF folders (GLUE dev sets, LM-BFF's subj/mpqa).
TEST_ROWS = {'sst2': 872, 'rte': 277, 'subj': 2000, 'mpqa': 2000, 'mrpc': 408,
             'qnli': 5463, 'cola': 1043, 'stsb': 1500}


def _needs(folder):
  if not (SHARED / folder).is_dir():
    pytest.skip(f'{SHARED / folder} is absent (the shared benchmark data lives beside '
                'the project only on the development machines).')


def _config(task, source, **fields):
  cfg = default_data_config()
  cfg.task, cfg.source = task, source
  for key, value in fields.items():
    setattr(cfg, key, value)
  return cfg


def _list(task, seed=1, k=30, data_dir=''):
  return _config(task, 'fewshot_list', fewshot_k=k, fewshot_seed=seed, data_dir=data_dir)


# ----------------------------------------------------------------------------
# LiST splits: the bundled copy.


@pytest.mark.parametrize('task', LIST_TASKS)
@pytest.mark.parametrize('seed', [1, 2, 3, 4, 5])
def test_bundled_list_train_files_have_k_examples_in_total(task, seed):
  spec, examples = load_examples(_list(task, seed), 'train')
  assert len(examples) == 30
  assert spec.eval_splits == ('test',)
  assert all(len(e.texts) == len(spec.text_columns) for e in examples)
  assert {e.label for e in examples} <= set(range(spec.num_labels))


@pytest.mark.parametrize('task', ['sst2', 'rte', 'subj', 'mpqa'])
def test_bundled_list_test_files_are_100_row_cuts(task, caplog):
  _, examples = load_examples(_list(task), 'test')
  assert len(examples) == 100
  assert 'cut of the LiST test file' in caplog.text


def test_list_formats_parse_as_the_source_writes_them():
  # SST-2 train: headerless `sentence<TAB>label`, the text as is (trailing space too).
  _, sst2 = load_examples(_list('sst2'), 'train')
  assert sst2[0] == Example(('finding the characters in slackers or their antics '
                             'amusing , let alone funny ',), 1)
  # MNLI train: headerless `index genre sentence1 sentence2 label`.
  _, mnli = load_examples(_list('mnli'), 'train')
  assert mnli[1] == Example(('Cook might just as well be gambling on what color tie '
                             'President Clinton will wear tomorrow.',
                             'President Clinton will wear a tie tomorrow.'), 0)
  assert mnli[0].label == 1  # neutral
  # subj: headerless `label,text` CSV with quoting.
  _, subj = load_examples(_list('subj'), 'train')
  assert subj[0] == Example(('diesel stars as xander " xxx " cage , the notorious '
                             'underground thrill seeker who until now has been deemed '
                             'untouchable by the law .',), 1)
  # QQP: GLUE layout with header; quotes are text, as GLUE's readers keep them.
  _, qqp = load_examples(_list('qqp'), 'train')
  assert qqp[1].texts[0].startswith('"What impact is the ""Make In India""')


def test_missing_split_folder_lists_the_available_ones():
  with pytest.raises(DataError, match=r"30-7: no such split folder.*'30-1'"):
    load_examples(_list('sst2', seed=7), 'train')


def test_k_is_required():
  with pytest.raises(ValueError, match='data.fewshot_k'):
    load_examples(_list('sst2', k=0), 'train')


def test_missing_test_file_is_named():
  with pytest.raises(DataError, match='test.tsv'):
    load_examples(_list('mnli'), 'test')  # LiST's MNLI test is not bundled


def test_bundled_list_sample_is_reproducible():
  _needs('few-shot-list')
  spec = importlib.util.spec_from_file_location('make_samples', MAKE_SAMPLES)
  make_samples = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_samples)
  source = SHARED / 'few-shot-list'
  for task in make_samples.FEWSHOT_TASKS:
    for seed in make_samples.FEWSHOT_SEEDS:
      for path in (source / task / f'30-{seed}').iterdir():
        bundled = fewshot.LIST_SAMPLES_DIR / task / f'30-{seed}' / path.name
        assert bundled.read_bytes() == path.read_bytes()
  for task, name, header in make_samples.FEWSHOT_TESTS:
    text = (source / task / name).read_bytes().decode('utf-8')
    expected = make_samples.sample_file(text, make_samples.FEWSHOT_TEST_ROWS, header)
    assert (fewshot.LIST_SAMPLES_DIR / task / name).read_text(encoding='utf-8') == expected


# ----------------------------------------------------------------------------
# LiST splits: the real folder.


@pytest.mark.parametrize('task', LIST_TASKS)
def test_real_list_folders_have_k_examples_in_total(task):
  _needs('few-shot-list')
  root = str(SHARED / 'few-shot-list')
  for k in (10, 20, 30):
    for seed in (1, 2, 3, 4, 5):
      spec, examples = load_examples(_list(task, seed, k, root), 'train')
      assert len(examples) == k, (task, k, seed)
  if task in TEST_ROWS:
    _, test = load_examples(_list(task, data_dir=root), 'test')
    assert len(test) == TEST_ROWS[task]
    assert {e.label for e in test} == set(range(spec.num_labels))


# ----------------------------------------------------------------------------
# LM-BFF k-shot splits.

LMBFF_TASKS = ('sst2', 'rte', 'mrpc', 'qnli', 'mnli', 'qqp', 'cola', 'stsb', 'snli',
               'subj', 'mpqa')


def _lmbff(task, seed=13, data_dir=None):
  return _config(task, 'lmbff', fewshot_k=16, fewshot_seed=seed,
                 data_dir=str(SHARED / 'k-shot') if data_dir is None else data_dir)


@pytest.mark.parametrize('task', LMBFF_TASKS)
def test_real_lmbff_folders_have_k_per_class(task):
  _needs('k-shot')
  for seed in (13, 21, 42, 87, 100):
    cfg = _lmbff(task, seed)
    spec = task_from_config(cfg)
    for split in ('train', spec.eval_splits[0]):
      _, examples = load_examples(cfg, split)
      if spec.is_regression:
        assert len(examples) == 32
      else:
        counts = [sum(e.label == c for e in examples) for c in range(spec.num_labels)]
        assert counts == [16] * spec.num_labels, (task, seed, split)
  if task in TEST_ROWS:
    assert spec.eval_splits == ('dev', 'test')
    assert len(load_examples(_lmbff(task), 'test')[1]) == TEST_ROWS[task]


def test_real_lmbff_splits_without_test_files_evaluate_on_dev(caplog):
  _needs('k-shot')
  assert task_from_config(_lmbff('mnli')).eval_splits == ('dev_matched',)
  assert 'test_matched' in caplog.text
  assert task_from_config(_lmbff('qqp')).eval_splits == ('dev',)


def test_real_lmbff_snli_reads_gold_label_of_11_and_15_column_rows():
  _needs('k-shot')
  _, examples = load_examples(_lmbff('snli'), 'train')
  assert examples[0] == Example((  # 15 fields: five annotator labels, then gold
      'The girl sitting by a rock is wearing a black coat, black hat, black gloves but is '
      'covered by a pink blanket.', 'a girl wears black'), 0)
  assert examples[1] == Example((  # 11 fields: one annotator label, then gold
      'A man sitting on top of an unfinished structure.',
      'A man is sitting on an structure in progress.'), 0)
  assert len(examples) == 48


def test_lmbff_layout_offline(tmp_path):
  folder = tmp_path / 'k-shot' / 'SST-2' / '16-13'
  folder.mkdir(parents=True)
  (folder / 'train.tsv').write_text('sentence\tlabel\ngood\t1\nbad\t0\n')
  (folder / 'dev.tsv').write_text('sentence\tlabel\nfine\t1\n')
  cfg = _lmbff('sst2', data_dir=str(tmp_path / 'k-shot'))
  assert task_from_config(cfg).eval_splits == ('dev',)  # no test.tsv here
  assert load_examples(cfg, 'train')[1] == [Example(('good',), 1), Example(('bad',), 0)]
  (folder / 'test.tsv').write_text('sentence\tlabel\nawful\t0\n')
  assert task_from_config(cfg).eval_splits == ('dev', 'test')
  assert load_examples(cfg, 'test')[1] == [Example(('awful',), 0)]
  subj = tmp_path / 'k-shot' / 'subj' / '16-13'
  subj.mkdir(parents=True)
  (subj / 'dev.csv').write_text('1,"a plot, summarised ."\n0,what a gem\n')
  assert load_examples(_lmbff('subj', data_dir=str(tmp_path / 'k-shot')), 'dev')[1] == [
      Example(('a plot, summarised .',), 1), Example(('what a gem',), 0)]


def test_lmbff_needs_a_data_dir():
  with pytest.raises(ValueError, match='data.data_dir'):
    load_examples(_lmbff('sst2', data_dir=''), 'train')


# ----------------------------------------------------------------------------
# Sampling K examples from a full training set.


def _sample(task='sst2', k=30, seed=1, per_class=False, **fields):
  return _config(task, 'sample', fewshot_k=k, fewshot_seed=seed,
                 fewshot_per_class=per_class, **fields)


def test_sampling_k_in_total_is_seeded_and_keeps_file_order():
  _, full = load_examples(_config('sst2', 'glue_tsv'), 'train')
  spec, first = load_examples(_sample(seed=1), 'train')
  assert len(first) == 30 and spec.eval_splits == ('dev',)
  assert load_examples(_sample(seed=1), 'train')[1] == first
  assert load_examples(_sample(seed=2), 'train')[1] != first
  positions = [full.index(e) for e in first]
  assert positions == sorted(positions)
  assert len(load_examples(_sample(), 'dev')[1]) == 872  # eval sets are not sampled


def test_sampling_k_per_class():
  spec, examples = load_examples(_sample(k=16, per_class=True), 'train')
  assert [sum(e.label == c for e in examples) for c in range(spec.num_labels)] == [16, 16]


def test_sampling_errors():
  with pytest.raises(DataError, match='Class 0 has'):
    load_examples(_sample('rte', k=30, per_class=True), 'train')  # 40-row sample
  with pytest.raises(DataError, match='Cannot sample 41'):
    load_examples(_sample('rte', k=41), 'train')
  with pytest.raises(ValueError, match='classification'):
    load_examples(_sample('stsb', k=4, per_class=True), 'train')
  with pytest.raises(ValueError, match='sample_source'):
    load_examples(_sample(sample_source='fewshot_list'), 'train')


def test_few_shot_tasks_are_registered():
  assert get_task('subj').labels == ('0', '1')
  assert get_task('MPQA').metrics == ('accuracy',)
  assert get_task('snli').labels == ('entailment', 'neutral', 'contradiction')
  assert get_task('mr').text_columns == get_task('cr').text_columns == ('sentence',)
