"""The results table: hand-made results.json files with known numbers -> exact cells.

Cells are mean ± sample std (ddof=1) over seeds, ×100; Avg. is the mean of the tasks'
headline means.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adamix_jax import report

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {
    'full': {'trainable_backbone': 124_000_000, 'trainable_backbone_pct': 100.0},
    'lora': {'trainable_backbone': 800_000, 'trainable_backbone_pct': 0.645},
    'adamix': {'trainable_backbone': 1_200_000, 'trainable_backbone_pct': 0.968,
               'merged_trainable_backbone': 300_000, 'merged_trainable_backbone_pct': 0.242},
}
# task -> metric keys as evaluation.evaluate writes them (MNLI: two eval splits).
KEYS = {'sst2': ('accuracy',), 'mrpc': ('accuracy', 'f1', 'combined'),
        'mnli': ('dev_matched/accuracy', 'dev_mismatched/accuracy'), 'rte': ('accuracy',)}
# method -> task -> per seed, the metric values in KEYS order (combined is computed).
SCORES = {
    'adamix': {
        'sst2': [[.90], [.92], [.94]],
        'mrpc': [[.85, .88], [.86, .89], [.90, .93]],
        'mnli': [[.80, .79], [.81, .80], [.82, .84]],
    },
    'lora': {
        'sst2': [[.91], [.93]],
        'mrpc': [[.88, .90], [.86, .92]],
        'mnli': [[.85, .84], [.87, .86]],
    },
    'full': {'sst2': [[.95]]},
}


def _metrics(task, values, shift=0.0):
  values = [v + shift for v in values]
  if task == 'mrpc':
    values = values + [sum(values) / 2]
  return dict(zip(KEYS[task], values))


def write_result(root: Path, task: str, method: str, seed: int, values, *,
                 checkpoint: str = 'roberta-large', final_shift: float = 0.01,
                 eval_splits=None) -> Path:
  """A results.json as train_and_evaluate writes it; 'final' = 'best' + final_shift."""
  path = root / task / method / f'seed_{seed}' / 'results.json'
  path.parent.mkdir(parents=True)
  selection = 'accuracy'
  params = {'method': method, 'trainable': PARAMS[method]['trainable_backbone'] + 1538,
            **PARAMS[method]}
  path.write_text(json.dumps({
      'task': task, 'method': method, 'seed': seed, 'checkpoint': checkpoint,
      'eval_mode': 'merged', 'selection_metric': selection,
      'final': {'step': 100, 'metrics': _metrics(task, values, final_shift)},
      'best': {'step': 60, 'metrics': _metrics(task, values)},
      'parameters': params, 'train_seconds': 1.0, 'export': str(path.parent / 'export'),
      **({} if eval_splits is None else {'eval_splits': eval_splits})}))
  return path


@pytest.fixture
def root(tmp_path) -> Path:
  for method, tasks in SCORES.items():
    for task, per_seed in tasks.items():
      for seed, values in enumerate(per_seed, start=1):
        write_result(tmp_path / 'runs', task, method, seed, values)
  return tmp_path / 'runs'


def _by_hand(values):
  """Mean and sample std (ddof=1) ×100, computed independently of the module."""
  x = np.asarray(values, np.float64) * 100
  return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else None)


def _markdown_rows(text):
  lines = [l for l in text.splitlines() if l.startswith('|')]
  header = [c.strip() for c in lines[0].strip('|').split('|')]
  return header, {cells[0]: dict(zip(header, cells)) for cells in (
      [c.strip() for c in l.strip('|').split('|')] for l in lines[2:])}


def test_markdown_cells_are_mean_and_sample_std_over_seeds(root):
  table = report.summarize(report.load_results(root))
  header, rows = _markdown_rows(report.to_markdown(table))
  # Paper column order; rows: full, lora, adamix.
  assert header == ['Method', '#Params', '% backbone', 'Merged', 'Seeds', 'MNLI m/mm',
                    'SST-2 acc', 'MRPC acc/F1', 'Avg.']
  assert list(rows) == ['full', 'lora', 'adamix']
  # Worked by hand: adamix SST-2 90, 92, 94 -> 92.0 ± 2.0; MRPC acc 85, 86, 90 -> mean 87,
  # sample std sqrt((4 + 1 + 9) / 2) = 2.65; F1 88, 89, 93 -> 90.0 ± 2.6; MNLI m 80, 81, 82
  # -> 81.0 ± 1.0, mm 79, 80, 84 -> 81.0 ± 2.6. Avg. = (81 + 92 + 87) / 3 = 86.67.
  assert rows['adamix']['SST-2 acc'] == '92.0±2.0'
  assert rows['adamix']['MRPC acc/F1'] == '87.0±2.6 / 90.0±2.6'
  assert rows['adamix']['MNLI m/mm'] == '81.0±1.0 / 81.0±2.6'
  assert rows['adamix']['Avg.'] == '86.7'
  assert rows['adamix']['Seeds'] == '3'
  # lora, 2 seeds: std of two values a, b is |a - b| / sqrt(2) = 1.41.
  assert rows['lora']['SST-2 acc'] == '92.0±1.4'
  assert rows['lora']['MRPC acc/F1'] == '87.0±1.4 / 91.0±1.4'
  assert rows['lora']['MNLI m/mm'] == '86.0±1.4 / 85.0±1.4'
  assert rows['lora']['Avg.'] == '88.3'  # (86 + 92 + 87) / 3
  # full: one seed (no ±), one task: '-' elsewhere and a starred partial average.
  assert rows['full']['SST-2 acc'] == '95.0'
  assert rows['full']['MRPC acc/F1'] == '-' and rows['full']['MNLI m/mm'] == '-'
  assert rows['full']['Avg.'] == '95.0*'
  # Parameters outside the head, % of the backbone, merged count for the mixture only.
  assert (rows['adamix']['#Params'], rows['adamix']['% backbone'],
          rows['adamix']['Merged']) == ('1.20M', '0.968%', '0.30M')
  assert (rows['full']['#Params'], rows['full']['Merged']) == ('124.0M', '')
  assert rows['lora']['#Params'] == '0.80M'


def test_table_values_equal_independent_computation(root):
  table = report.summarize(report.load_results(root))
  for row in table.rows:
    for task, cell in row.cells.items():
      per_seed = SCORES[row.method][task]
      for i, key in enumerate(KEYS[task][:2] if task != 'sst2' else KEYS[task]):
        mean, std = _by_hand([v[i] for v in per_seed])
        assert cell.keys[i] == key
        assert cell.means[i] == pytest.approx(mean, abs=1e-9)
        assert (cell.stds[i] is None) == (std is None)
        if std is not None:
          assert cell.stds[i] == pytest.approx(std, abs=1e-9)
    headline = [_by_hand([v[0] for v in SCORES[row.method][t]])[0] for t in row.cells]
    assert row.average == pytest.approx(np.mean(headline), abs=1e-9)


def test_csv_parses_and_holds_unrounded_scores(root, tmp_path):
  table = report.summarize(report.load_results(root))
  path = report.write_csv(table, tmp_path / 'table.csv')
  with open(path, newline='') as f:
    rows = {r['method']: r for r in csv.DictReader(f)}
  adamix = rows['adamix']
  assert float(adamix['mrpc/accuracy']) == pytest.approx(87.0, abs=1e-9)
  assert float(adamix['mrpc/accuracy/std']) == pytest.approx(math.sqrt(7), abs=1e-9)
  assert float(adamix['mnli/dev_mismatched/accuracy/std']) == pytest.approx(math.sqrt(7),
                                                                           abs=1e-9)
  assert float(adamix['avg']) == pytest.approx(260 / 3, abs=1e-9)
  assert adamix['mrpc/n'] == '3' and adamix['avg_num_tasks'] == '3'
  assert int(adamix['trainable_backbone']) == 1_200_000
  assert int(adamix['merged_trainable_backbone']) == 300_000
  assert 'mrpc/combined' not in adamix
  full = rows['full']
  assert full['sst2/accuracy/std'] == '' and full['mrpc/accuracy'] == ''
  assert full['avg_num_tasks'] == '1' and float(full['avg']) == pytest.approx(95.0)


def test_final_reports_the_last_evaluation(root):
  table = report.summarize(report.load_results(root, 'final'), 'final')
  _, rows = _markdown_rows(report.to_markdown(table))
  assert rows['adamix']['SST-2 acc'] == '93.0±2.0'  # every final score is best + 1 point
  assert 'final evaluation' in report.to_markdown(table)


def test_write_report_writes_markdown_csv_and_a_valid_png(root, tmp_path):
  paths = report.write_report(root, tmp_path / 'out')
  assert paths['markdown'].read_text().startswith('| Method |')
  assert paths['csv'].is_file()
  assert paths['plot'].read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  with Image.open(paths['plot']) as image:
    image.verify()
  with Image.open(paths['plot']) as image:
    assert image.format == 'PNG' and min(image.size) > 100


def test_cli_prints_the_table_and_writes_into_out(root, tmp_path):
  out = subprocess.run([sys.executable, '-m', 'experiments.report', f'--root={root}',
                        f'--out={tmp_path / "rep"}', '--which=best'], cwd=ROOT,
                       capture_output=True, text=True, check=True)
  assert '| adamix |' in out.stdout and '92.0±2.0' in out.stdout
  assert sorted(p.name for p in (tmp_path / 'rep').iterdir()) == [
      'results.csv', 'results.md', 'results.png']


def test_note_names_the_evaluation_split(tmp_path):
  for seed in (1, 2):
    write_result(tmp_path / 'fs', 'sst2', 'lora', seed, [.8], eval_splits=['test'])
  text = report.to_markdown(report.summarize(report.load_results(tmp_path / 'fs', 'final'),
                                             'final'))
  assert 'Scores ×100 on the `test` split' in text and 'Dev-set' not in text
  # One run that did not record its splits: the note names none rather than guess.
  write_result(tmp_path / 'fs', 'sst2', 'lora', 3, [.8])
  text = report.to_markdown(report.summarize(report.load_results(tmp_path / 'fs')))
  assert "each run's evaluation split" in text and '`test`' not in text


def test_same_run_twice_is_refused_naming_both_files(root):
  first = root / 'sst2' / 'lora' / 'seed_1' / 'results.json'
  copy = root / 'old_sweep' / 'seed_1' / 'results.json'
  copy.parent.mkdir(parents=True)
  shutil.copy(first, copy)
  with pytest.raises(ValueError, match='seed 1') as error:
    report.load_results(root)
  assert str(first) in str(error.value) and str(copy) in str(error.value)


def test_mixed_backbones_are_refused(root):
  write_result(root, 'rte', 'lora', 1, [.7], checkpoint='bert-base-uncased')
  with pytest.raises(ValueError, match='bert-base-uncased'):
    report.summarize(report.load_results(root))


def test_incomplete_results_file_is_named(root):
  bad = root / 'sst2' / 'lora' / 'seed_1' / 'results.json'
  data = json.loads(bad.read_text())
  data['best'] = {'step': -1, 'metrics': {}}
  bad.write_text(json.dumps(data))
  with pytest.raises(ValueError, match=str(bad)):
    report.load_results(root)


def test_empty_root_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No results.json'):
    report.load_results(tmp_path)


def test_headline_is_the_test_split_when_dev_only_selects():
  """LM-BFF evaluates on dev (to select) and test (reported): the headline, and Avg., is
  test; several dev splits (MNLI) keep the first one."""
  lmbff = {'dev/accuracy': .9, 'dev/f1': .8, 'test/accuracy': .7, 'test/f1': .6}
  assert report.metric_keys(lmbff, 'accuracy') == ('test/accuracy', 'dev/accuracy', 'dev/f1',
                                                   'test/f1')
  mnli = {'dev_matched/accuracy': .8, 'dev_mismatched/accuracy': .7}
  assert report.metric_keys(mnli, 'accuracy')[0] == 'dev_matched/accuracy'
