"""Prediction with an export: one row per input row in order, the run's metric reproduced,
unlabelled and JSONL/CSV files, errors that name the file and column, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adamix_jax import predict, train
from adamix_jax.data import SAMPLES_DIR
from adamix_jax.data.readers import DataError
from configs import tiny

ROOT = Path(__file__).resolve().parents[1]
DEV_ROWS = 40  # not a multiple of the batch size: the last batch is padded


def small_glue_dir(path: Path, train_rows: int = 64, dev_rows: int = DEV_ROWS) -> Path:
  """The first rows of the bundled SST-2 sample, laid out as glue_data/SST-2/."""
  (path / 'SST-2').mkdir(parents=True)
  for split, rows in (('train', train_rows), ('dev', dev_rows)):
    lines = (SAMPLES_DIR / 'SST-2' / f'{split}.tsv').read_text().splitlines()
    (path / 'SST-2' / f'{split}.tsv').write_text('\n'.join(lines[:rows + 1]) + '\n')
  return path


@pytest.fixture(scope='module')
def trained(tiny_checkpoint, tmp_path_factory):
  """A short tiny AdaMix run evaluated on DEV_ROWS rows, and a Predictor of its export
  batching exactly as the run's evaluation did."""
  root = tmp_path_factory.mktemp('predict')
  config = tiny.get_config()
  config.model.checkpoint = str(tiny_checkpoint)
  config.data.data_dir = str(small_glue_dir(root / 'glue'))
  config.num_train_steps, config.eval_every_steps = 4, 2
  results = train.train_and_evaluate(config, root / 'run')
  predictor = predict.Predictor(root / 'run' / 'export', batch_size=config.eval_batch_size,
                                bucket_size=config.data.bucket_size)
  return results, predictor, root / 'glue' / 'SST-2' / 'dev.tsv', root / 'run' / 'export'


@pytest.fixture(scope='module')
def trained_headerless(tiny_checkpoint, tmp_path_factory):
  """A tiny run on headerless CSVs (`label,sentence`) read through data.column_names, the
  Predictor of its export, and its dev file."""
  root = tmp_path_factory.mktemp('headerless')
  for split, rows in (('train', 64), ('dev', DEV_ROWS)):
    lines = (SAMPLES_DIR / 'SST-2' / f'{split}.tsv').read_text().splitlines()[1:rows + 1]
    with open(root / f'{split}.csv', 'w', newline='') as f:
      csv.writer(f).writerows(line.split('\t')[::-1] for line in lines)
  config = tiny.get_config()
  config.model.checkpoint = str(tiny_checkpoint)
  config.data.source = 'custom'
  config.data.train_file = str(root / 'train.csv')
  config.data.eval_files = (str(root / 'dev.csv'),)
  config.data.column_names = ('label', 'sentence')
  config.num_train_steps, config.eval_every_steps = 2, 2
  results = train.train_and_evaluate(config, root / 'run')
  predictor = predict.Predictor(root / 'run' / 'export', batch_size=config.eval_batch_size,
                                bucket_size=config.data.bucket_size)
  return results, predictor, root / 'dev.csv'


def _read_tsv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f, delimiter='\t'))


def test_one_prediction_per_input_row_in_input_order(trained, tmp_path):
  _, predictor, dev, _ = trained
  result = predictor.predict_file(dev, tmp_path / 'pred.tsv')
  rows = _read_tsv(tmp_path / 'pred.tsv')
  assert len(rows) == len(result.predictions) == DEV_ROWS
  probs = np.asarray([[float(r['prob_0']), float(r['prob_1'])] for r in rows])
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  assert [r['prediction'] for r in rows] == [['0', '1'][i] for i in probs.argmax(-1)]
  # The same rows reversed come back reversed (batches and padding differ, rows do not).
  lines = dev.read_text().splitlines()
  reversed_file = tmp_path / 'reversed.tsv'
  reversed_file.write_text('\n'.join([lines[0]] + lines[1:][::-1]) + '\n')
  again = predictor.predict_file(reversed_file, tmp_path / 'reversed_pred.tsv')
  np.testing.assert_allclose(again.outputs[::-1], result.outputs, atol=1e-5)
  # ...and a row predicted on its own matches its row in the file.
  examples, _ = predict.read_file(dev, predictor.task)
  for i in (0, DEV_ROWS - 1):
    np.testing.assert_allclose(predictor.predict([examples[i]])[0], result.outputs[i],
                               atol=1e-5)


def test_labelled_file_reproduces_the_runs_eval_metric(trained, tmp_path):
  results, predictor, dev, _ = trained
  result = predictor.predict_file(dev, tmp_path / 'pred.tsv')
  # The export is the best checkpoint, merged; the file is the run's dev split.
  assert result.metrics == pytest.approx(results['best']['metrics'], abs=1e-12)


def test_unlabelled_jsonl_gives_the_same_predictions_and_no_metrics(trained, tmp_path):
  _, predictor, dev, _ = trained
  labelled = predictor.predict_file(dev, None)
  rows = _read_tsv(dev)
  jsonl = tmp_path / 'unlabelled.jsonl'
  jsonl.write_text(''.join(json.dumps({'sentence': r['sentence']}) + '\n' for r in rows))
  result = predictor.predict_file(jsonl, tmp_path / 'pred.jsonl')
  assert result.metrics is None
  np.testing.assert_array_equal(result.outputs, labelled.outputs)
  written = [json.loads(l) for l in (tmp_path / 'pred.jsonl').read_text().splitlines()]
  assert [w['prediction'] for w in written] == labelled.predictions
  assert set(written[0]['probabilities']) == {'0', '1'}
  # A CSV with its own column name, named explicitly, and CSV output.
  csv_in = tmp_path / 'reviews.csv'
  with open(csv_in, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'review'])
    writer.writerows([i, r['sentence']] for i, r in enumerate(rows))
  result = predictor.predict_file(csv_in, tmp_path / 'pred.csv', text_columns=['review'])
  np.testing.assert_array_equal(result.outputs, labelled.outputs)
  with open(tmp_path / 'pred.csv', newline='') as f:
    assert len(list(csv.DictReader(f))) == len(rows)


def test_errors_name_the_file_and_the_column(trained, tmp_path):
  _, predictor, dev, _ = trained
  with pytest.raises(DataError, match=rf"{dev}:1: missing column\(s\) \['review'\]"):
    predictor.predict_file(dev, None, text_columns=['review'])
  with pytest.raises(DataError, match=rf"{dev}: no label column 'gold'"):
    predictor.predict_file(dev, None, label_column='gold', require_labels=True)
  jsonl = tmp_path / 'bad.jsonl'
  jsonl.write_text('{"sentence": "fine"}\n{"text": "no sentence here"}\n')
  with pytest.raises(DataError, match=rf"{jsonl}:2: no column 'sentence'"):
    predictor.predict_file(jsonl, None)
  bad_label = tmp_path / 'bad_label.tsv'
  bad_label.write_text('sentence\tlabel\ngood film\tpositive\n')
  with pytest.raises(DataError, match=rf"{bad_label}:2: label 'positive' is not in"):
    predictor.predict_file(bad_label, None)


def test_cli_writes_predictions_and_prints_metrics(trained, tmp_path):
  results, _, dev, export_dir = trained
  command = [sys.executable, '-m', 'experiments.predict', f'--export={export_dir}',
             f'--input={dev}', f'--output={tmp_path / "pred.tsv"}', '--batch_size=16',
             '--bucket_size=8']
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  printed = json.loads(out.stdout.strip().splitlines()[-1])
  assert printed['num_examples'] == DEV_ROWS
  assert printed['accuracy'] == pytest.approx(results['best']['metrics']['accuracy'],
                                              abs=1e-12)
  assert len(_read_tsv(tmp_path / 'pred.tsv')) == DEV_ROWS
  out = subprocess.run(command + ['--text_columns=review'], cwd=ROOT, capture_output=True,
                       text=True)
  assert out.returncode != 0
  assert f"error: {dev}:1: missing column(s) ['review']" in out.stderr


def test_headerless_csv_trained_with_column_names_is_predicted_as_trained(
    trained_headerless, tmp_path):
  results, predictor, dev = trained_headerless
  assert predictor.info['file_layout'] == {'format': '', 'column_names': ['label', 'sentence']}
  result = predictor.predict_file(dev, tmp_path / 'pred.csv')
  assert len(result.predictions) == DEV_ROWS
  assert result.metrics == pytest.approx(results['best']['metrics'], abs=1e-12)
  # The same rows with a header line, and with their columns in another order.
  headed = tmp_path / 'headed.csv'
  headed.write_text('label,sentence\n' + dev.read_text())
  again = predictor.predict_file(headed, None)
  np.testing.assert_array_equal(again.outputs, result.outputs)
  assert again.metrics == result.metrics
  with open(dev, newline='') as f:
    rows = list(csv.reader(f))
  swapped = tmp_path / 'swapped.csv'
  with open(swapped, 'w', newline='') as f:
    csv.writer(f).writerows([['sentence', 'label']] + [row[::-1] for row in rows])
  np.testing.assert_array_equal(predictor.predict_file(swapped, None).outputs, result.outputs)
  # Names passed explicitly read the file as the export's would.
  examples, labelled = predict.read_file(dev, predictor.task, column_names=['label', 'sentence'])
  assert labelled and len(examples) == DEV_ROWS
  # Without the names, the first row is taken for a header and lacks the text column.
  with pytest.raises(DataError, match=rf"{dev}:1: missing column\(s\) \['sentence'\]"):
    predict.read_file(dev, predictor.task)
