"""Readers turning GLUE TSVs, tfds GLUE or your own CSV/TSV/JSONL into Examples.

Every reader is strict: a missing file or column, a label outside the task's label
set, a non-numeric regression score, an empty text or a malformed line raises a
`DataError` whose message starts with `<file>:<line>:`. With `skip_bad_rows=True`
row-level problems are counted and logged instead (never silently dropped);
file-level problems always raise.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from absl import logging

from adamix_jax.data.tasks import TaskSpec, custom_task, get_task

# The bundled GLUE samples (<TASK>/{train,dev}.tsv), the default `data_dir`.
SAMPLES_DIR = Path(__file__).resolve().parent / 'samples' / 'glue'

# How many row errors a skip report quotes in full.
_ERRORS_QUOTED = 5


class DataError(ValueError):
  """Bad input data; the message names the file (and line) at fault."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One labelled example.

  Attributes:
    texts: the example's one or two texts, in the task's `text_columns` order.
    label: index into `TaskSpec.labels`, or the float target for regression.
  """
  texts: tuple[str, ...]
  label: int | float


@dataclasses.dataclass(frozen=True)
class _GlueLayout:
  """Where a task's fields sit in the GLUE-distributed TSVs."""
  dirname: str
  text_columns: tuple[str | int, ...]  # header names; indices when no header
  label_column: str | int
  header: bool = True
  num_columns: int | None = None  # only needed without a header


# Column names as distributed in glue_data/ (download_glue_data.py); MRPC's first
# header cell carries a UTF-8 BOM, which decoding with utf-8-sig removes.
GLUE_LAYOUTS: dict[str, _GlueLayout] = {
    # CoLA train/dev: source, label, original judgement, sentence; no header.
    'cola': _GlueLayout('CoLA', (3,), 1, header=False, num_columns=4),
    'sst2': _GlueLayout('SST-2', ('sentence',), 'label'),
    'mrpc': _GlueLayout('MRPC', ('#1 String', '#2 String'), 'Quality'),
    'qqp': _GlueLayout('QQP', ('question1', 'question2'), 'is_duplicate'),
    'stsb': _GlueLayout('STS-B', ('sentence1', 'sentence2'), 'score'),
    'mnli': _GlueLayout('MNLI', ('sentence1', 'sentence2'), 'gold_label'),
    'qnli': _GlueLayout('QNLI', ('question', 'sentence'), 'label'),
    'rte': _GlueLayout('RTE', ('sentence1', 'sentence2'), 'label'),
}

# tfds split names for ours, and tfds' own class names (checked, so that a tfds
# release that reorders classes cannot silently flip labels).
_TFDS_SPLITS = {'train': 'train', 'dev': 'validation',
                'dev_matched': 'validation_matched',
                'dev_mismatched': 'validation_mismatched'}
_TFDS_LABEL_NAMES = {
    'cola': ('unacceptable', 'acceptable'),
    'sst2': ('negative', 'positive'),
    'mrpc': ('not_equivalent', 'equivalent'),
    'qqp': ('not_duplicate', 'duplicate'),
    'mnli': ('entailment', 'neutral', 'contradiction'),
    'qnli': ('entailment', 'not_entailment'),
    'rte': ('entailment', 'not_entailment'),
}


# ----------------------------------------------------------------------------
# Turning records into Examples.


class _RowParser:
  """Validates records one by one, raising or counting row errors."""

  def __init__(self, task: TaskSpec, text_columns: Sequence[Any],
               label_column: Any, skip_bad_rows: bool, source: str):
    self.task = task
    self.text_columns = tuple(text_columns)
    self.label_column = label_column
    self.skip_bad_rows = skip_bad_rows
    self.source = source
    self.errors: list[str] = []
    if len(self.text_columns) != len(task.text_columns):
      raise DataError(f'{source}: task {task.name!r} takes '
                      f'{len(task.text_columns)} text column(s), got '
                      f'{self.text_columns!r}.')
    self._label_index = (None if task.labels is None else
                         {label: i for i, label in enumerate(task.labels)})

  def parse(self, records: Iterator[tuple[int, Any]]) -> list[Example]:
    examples = []
    for line, record in records:
      try:
        examples.append(self._example(record, f'{self.source}:{line}'))
      except DataError as e:
        if not self.skip_bad_rows:
          raise DataError(f'{e} (data.skip_bad_rows=True counts, logs and '
                          'skips such rows instead.)') from None
        self.errors.append(str(e))
    if self.errors:
      quoted = '\n  '.join(self.errors[:_ERRORS_QUOTED])
      logging.warning('Skipped %d bad rows of %s (skip_bad_rows=True), '
                      'kept %d; first errors:\n  %s', len(self.errors),
                      self.source, len(examples), quoted)
    return examples

  def _example(self, record: Any, where: str) -> Example:
    if isinstance(record, DataError):  # a line the format reader rejected
      raise record
    texts = []
    for column in self.text_columns:
      text = self._field(record, column, where)
      if not isinstance(text, str):
        raise DataError(f'{where}: text column {column!r} holds '
                        f'{type(text).__name__} {text!r}, not a string.')
      if not text.strip():
        raise DataError(f'{where}: empty text in column {column!r}.')
      texts.append(text)
    return Example(tuple(texts), self._label(
        self._field(record, self.label_column, where), where))

  def _field(self, record: Any, column: Any, where: str) -> Any:
    try:
      return record[column]
    except (KeyError, IndexError):
      raise DataError(f'{where}: no column {column!r} in this row.') from None

  def _label(self, value: Any, where: str) -> int | float:
    if self._label_index is None:
      # bool is an int subclass; a JSON true is not a similarity score.
      if isinstance(value, bool):
        raise DataError(f'{where}: non-numeric regression score {value!r}.')
      try:
        score = float(value)
      except (TypeError, ValueError):
        raise DataError(f'{where}: non-numeric regression score '
                        f'{value!r}.') from None
      if not math.isfinite(score):
        raise DataError(f'{where}: non-finite regression score {value!r}.')
      return score
    key = value if isinstance(value, str) else json.dumps(value)
    if key not in self._label_index:
      raise DataError(f'{where}: label {value!r} is not in the label set of '
                      f'task {self.task.name!r}: {self.task.labels}.')
    return self._label_index[key]


def _check_columns(source: str, header: Sequence[str],
                   columns: Sequence[Any]) -> None:
  missing = [c for c in columns if c not in header]
  if missing:
    raise DataError(f'{source}:1: missing column(s) {missing}; the header has '
                    f'{list(header)}.')


# ----------------------------------------------------------------------------
# File formats. Each yields (1-based line number, record) pairs.


def _read_text(path: Path) -> str:
  if not path.is_file():
    raise DataError(f'{path}: no such file.')
  data = path.read_bytes()
  try:
    # utf-8-sig drops the BOM that GLUE's MRPC files start with.
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise DataError(f'{path}:{line}: not valid UTF-8 ({e.reason}).') from None


def _lines(text: str) -> list[str]:
  lines = text.split('\n')
  while lines and not lines[-1].strip():  # trailing newline(s) at end of file
    lines.pop()
  return [line[:-1] if line.endswith('\r') else line for line in lines]


def _tsv_records(path: Path, column_names: Sequence[str] | None,
                 num_columns: int | None = None
                 ) -> tuple[list[str] | None, Iterator[tuple[int, Any]]]:
  """Splits on tabs with quoting off, as GLUE's files require.

  Quote characters are ordinary text here: a stray '"' (common in MRPC, QNLI)
  must not swallow the following lines into one field.

  Args:
    path: the file.
    column_names: names for a headerless file; None reads the header line.
    num_columns: for a headerless file read by column index (CoLA).

  Returns:
    (header or None, iterator of (line number, dict or list of fields)); a
    line with the wrong number of fields comes as a DataError in its place.
  """
  lines = _lines(_read_text(path))
  if column_names is not None:
    header, first, width = list(column_names), 1, len(column_names)
  elif num_columns is not None:
    header, first, width = None, 1, num_columns
  elif lines:
    header = lines[0].split('\t')
    first, width = 2, len(header)
  else:
    raise DataError(f'{path}:1: empty file, expected a header line.')

  def records():
    for line_no, line in enumerate(lines[first - 1:], start=first):
      fields = line.split('\t')
      if len(fields) != width:
        yield line_no, DataError(
            f'{path}:{line_no}: {len(fields)} tab-separated fields, expected '
            f'{width}.')
      else:
        yield line_no, fields if header is None else dict(zip(header, fields))

  return header, records()


def _csv_records(path: Path, column_names: Sequence[str] | None
                 ) -> tuple[list[str], Iterator[tuple[int, Any]]]:
  """Standard CSV (quoting on); records may span lines inside quotes."""
  reader = csv.reader(io.StringIO(_read_text(path), newline=''), strict=True)
  try:
    header = list(column_names) if column_names else next(reader)
  except StopIteration:
    raise DataError(f'{path}:1: empty file, expected a header line.') from None
  except csv.Error as e:
    raise DataError(f'{path}:1: {e}.') from None

  def records():
    start = reader.line_num + 1
    blank = []  # blank lines are an error inside the file, not at its end (as TSV, JSONL)
    while True:
      try:
        fields = next(reader)
      except StopIteration:
        return
      except csv.Error as e:
        raise DataError(f'{path}:{start}: malformed CSV ({e}).') from None
      if not fields:  # csv yields [] for a blank line
        blank.append(start)
        start = reader.line_num + 1
        continue
      for line_no in blank:
        yield line_no, DataError(f'{path}:{line_no}: blank line.')
      blank = []
      if len(fields) != len(header):
        yield start, DataError(f'{path}:{start}: {len(fields)} fields, '
                               f'expected {len(header)}.')
      else:
        yield start, dict(zip(header, fields))
      start = reader.line_num + 1

  return header, records()


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
  for line_no, line in enumerate(_lines(_read_text(path)), start=1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      yield line_no, DataError(f'{path}:{line_no}: invalid JSON ({e.msg}).')
      continue
    if not isinstance(record, dict):
      yield line_no, DataError(f'{path}:{line_no}: expected a JSON object, got '
                               f'{type(record).__name__}.')
    else:
      yield line_no, record


# ----------------------------------------------------------------------------
# Public readers.


def read_glue_tsv(task: TaskSpec | str, path: str | Path, *,
                  skip_bad_rows: bool = False) -> list[Example]:
  """Reads one GLUE-distributed file, e.g. glue_data/MRPC/train.tsv.

  Args:
    task: a registered GLUE task (or its name).
    path: the .tsv file.
    skip_bad_rows: count and log bad rows instead of raising on the first.

  Returns:
    The file's examples in file order.
  """
  task = get_task(task) if isinstance(task, str) else task
  if task.name not in GLUE_LAYOUTS:
    raise ValueError(f'No GLUE TSV layout for task {task.name!r}; use '
                     'source="custom" for your own files.')
  layout = GLUE_LAYOUTS[task.name]
  path = Path(path)
  header, records = _tsv_records(path, None, None if layout.header
                                 else layout.num_columns)
  if header is not None:
    _check_columns(str(path), header,
                   (*layout.text_columns, layout.label_column))
  parser = _RowParser(task, layout.text_columns, layout.label_column,
                      skip_bad_rows, str(path))
  return parser.parse(records)


def read_custom(path: str | Path, fmt: str, text_columns: Sequence[str],
                label_column: str, task: TaskSpec, *,
                column_names: Sequence[str] | None = None,
                skip_bad_rows: bool = False) -> list[Example]:
  """Reads your own CSV, TSV or JSONL file.

  Args:
    path: the file.
    fmt: 'csv' (quoting on), 'tsv' (GLUE-style, quoting off) or 'jsonl' (one
      object per line); '' infers it from the extension.
    text_columns: the one or two columns holding text, in order.
    label_column: the column holding a label name (classification) or a number
      (regression).
    task: gives the label set (or regression) that labels are checked against.
    column_names: for CSV/TSV files without a header, the names of their
      columns; None means the first line is the header.
    skip_bad_rows: count and log bad rows instead of raising on the first.

  Returns:
    The file's examples in file order.
  """
  path = Path(path)
  fmt = (fmt or path.suffix.lstrip('.')).lower()
  columns = (*text_columns, label_column)
  if fmt == 'jsonl':
    records = _jsonl_records(path)
  elif fmt in ('csv', 'tsv'):
    header, records = (_csv_records(path, column_names) if fmt == 'csv' else
                       _tsv_records(path, column_names))
    _check_columns(str(path), header, columns)
  else:
    raise DataError(f'{path}: unknown format {fmt!r}; expected csv, tsv or '
                    'jsonl (set data.format or use one of those extensions).')
  parser = _RowParser(task, text_columns, label_column, skip_bad_rows,
                      str(path))
  return parser.parse(records)


def read_tfds(task: TaskSpec | str, split: str, data_dir: str | None = None,
              download: bool = False, *,
              skip_bad_rows: bool = False) -> list[Example]:
  """Reads tensorflow-datasets' `glue/<task>` (needs TensorFlow).

  Args:
    task: a registered GLUE task (or its name).
    split: 'train', 'dev', 'dev_matched' or 'dev_mismatched'.
    data_dir: the TFDS data directory; None uses TFDS' default
      (~/tensorflow_datasets or $TFDS_DATA_DIR).
    download: allow downloading and preparing the data if it is not prepared.
      Off by default so that nothing ever waits on the network.
    skip_bad_rows: count and log bad rows instead of raising on the first.

  Returns:
    The split's examples in tfds index order.
  """
  task = get_task(task) if isinstance(task, str) else task
  name = f'glue/{task.name}'
  if split not in _TFDS_SPLITS:
    raise ValueError(f'Unknown split {split!r}; expected one of '
                     f'{list(_TFDS_SPLITS)}.')
  if importlib.util.find_spec('tensorflow') is None or importlib.util.find_spec(
      'tensorflow_datasets') is None:
    raise ImportError(f'Reading {name} needs tensorflow and tensorflow-datasets; '
                      'install them or use source="glue_tsv".')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for unknown names
    raise ValueError(f'tensorflow-datasets has no dataset {name!r}: {e}') from e
  if not builder.is_prepared():
    if not download:
      raise DataError(
          f'{builder.data_dir}: TFDS dataset {name} is not prepared (download='
          f'False, so nothing was fetched). Prepare it once on a machine with '
          f'network access: `tfds build {name} --data_dir='
          f'{data_dir or "~/tensorflow_datasets"}` or `python -c "import '
          f'tensorflow_datasets as tfds; tfds.builder(\'{name}\', data_dir='
          f'{data_dir!r}).download_and_prepare()"`, or set data.download=True.')
    builder.download_and_prepare()
  if task.labels is not None:
    names = tuple(builder.info.features['label'].names)
    if names != _TFDS_LABEL_NAMES.get(task.name):
      raise DataError(f'{builder.data_dir}: {name} labels are {names}, '
                      f'expected {_TFDS_LABEL_NAMES.get(task.name)} (tfds '
                      'changed its class order?).')
  tfds_split = _TFDS_SPLITS[split]
  if tfds_split not in builder.info.splits:
    raise DataError(f'{builder.data_dir}: {name} has no split {tfds_split!r}; '
                    f'it has {list(builder.info.splits)}.')
  rows = sorted(tfds.as_numpy(builder.as_dataset(split=tfds_split,
                                                 shuffle_files=False)),
                key=lambda row: int(row['idx']))

  def records():
    for row in rows:
      record = {c: row[c].decode('utf-8') for c in task.text_columns}
      label = row['label']
      if task.labels is not None:
        # tfds stores -1 for unlabelled (test) rows; map ints to our names.
        label = (task.labels[label] if 0 <= label < len(task.labels)
                 else int(label))
      record['label'] = label if task.labels is not None else float(label)
      yield int(row['idx']), record

  parser = _RowParser(task, task.text_columns, 'label', skip_bad_rows,
                      f'tfds {name} [{tfds_split}] idx')
  return parser.parse(records())


# ----------------------------------------------------------------------------
# The config-driven entry point.


def _get(cfg: Any, field: str, default: Any = None) -> Any:
  value = getattr(cfg, field, default)
  return default if value is None and default is not None else value


def _eval_files(cfg: Any) -> dict[str, str]:
  """{split: path} in the configured order (the first split selects models).

  `eval_files` is a sequence of 'path' or 'name=path' entries (a bare path names
  its split after the file: dev.csv -> 'dev'), a comma-separated string of the
  same, or a mapping {name: path}.
  """
  files = _get(cfg, 'eval_files', ()) or ()
  if isinstance(files, str):
    files = [f for f in files.split(',') if f.strip()]
  if isinstance(files, Mapping) or hasattr(files, 'items'):
    return {str(k): str(v) for k, v in files.items() if v}
  result = {}
  for entry in files:
    entry = str(entry).strip()
    name, sep, path = entry.partition('=')
    if not sep or not re.fullmatch(r'[\w.-]+', name):  # no name, or '=' in a path
      name, path = '', entry
    name = name or Path(path).stem
    if name in result:
      raise ValueError(f'data.eval_files names split {name!r} twice.')
    result[name] = path
  return result


class _Overridden:
  """`cfg` with some fields replaced (a view; `cfg` itself is not changed)."""

  def __init__(self, cfg: Any, **fields: Any):
    self._cfg, self._fields = cfg, fields

  def __getattr__(self, name: str) -> Any:
    if name in self._fields:
      return self._fields[name]
    return getattr(self._cfg, name)


def _sampled_from(data_cfg: Any) -> Any:
  """For source='sample', the config of the source the full data comes from."""
  inner = _get(data_cfg, 'sample_source', 'glue_tsv')
  if inner in ('sample', 'fewshot_list', 'lmbff'):
    raise ValueError(f'data.sample_source={inner!r}: sample from a full training '
                     'set (glue_tsv, tfds or custom).')
  return _Overridden(data_cfg, source=inner, max_train_examples=0)


def task_from_config(data_cfg: Any) -> TaskSpec:
  """The TaskSpec a data config describes, without reading any data.

  A registered name keeps its label set and metrics whatever the source; for
  source='custom' its eval splits become the keys of `eval_files`, for the few-shot
  sources those of the split folder (`fewshot.eval_splits`), for source='sample'
  those of `sample_source`. Any other name with source='custom' builds a task from
  `labels`, `text_columns`, `metrics` and `selection_metric`.
  """
  source = _get(data_cfg, 'source', 'glue_tsv')
  name = _get(data_cfg, 'task', '')
  if source == 'sample':
    return task_from_config(_sampled_from(data_cfg))
  if source in ('fewshot_list', 'lmbff'):
    from adamix_jax.data import fewshot  # pylint: disable=g-import-not-at-top
    spec = get_task(name)
    return dataclasses.replace(spec, eval_splits=fewshot.eval_splits(
        source, spec, _get(data_cfg, 'data_dir', ''),
        int(_get(data_cfg, 'fewshot_k', 0) or 0),
        int(_get(data_cfg, 'fewshot_seed', 0) or 0)))
  if source != 'custom':
    return get_task(name)
  splits = tuple(_eval_files(data_cfg)) or ('dev',)
  labels = _get(data_cfg, 'labels')
  regression = bool(_get(data_cfg, 'regression', False))
  try:
    spec = get_task(name)
  except ValueError:
    text_columns = tuple(_get(data_cfg, 'text_columns', ()))
    if not text_columns:
      raise ValueError(f'Custom task {name!r} needs data.text_columns.') from None
    if regression and labels is not None:
      raise ValueError(f'Custom task {name!r}: data.regression=True regresses a score and '
                       f'takes no data.labels (got {tuple(labels)}).')
    if not regression and labels is None:
      raise ValueError(f'Custom task {name!r} needs data.labels (class names in label-index '
                       "order, e.g. --config.data.labels=\"('neg', 'pos')\"), or "
                       'data.regression=True for a numeric score.')
    if labels is not None and len(labels) < 2:
      raise ValueError(f'Custom task {name!r}: data.labels={tuple(labels)} names one class; '
                       "a classification task needs two or more (write the tuple as "
                       "\"('neg', 'pos')\", not 'neg,pos').")
    return custom_task(name or 'custom', text_columns, labels,
                       metrics=tuple(_get(data_cfg, 'metrics', ())) or None,
                       selection_metric=_get(data_cfg, 'selection_metric') or None,
                       eval_splits=splits)
  if labels is not None and tuple(str(l) for l in labels) != spec.labels:
    raise ValueError(f'data.labels={tuple(labels)} conflicts with registered '
                     f'task {spec.name!r} labels {spec.labels}; leave labels '
                     'unset or choose another task name.')
  return dataclasses.replace(spec, eval_splits=splits)


def load_examples(data_cfg: Any, split: str) -> tuple[TaskSpec, list[Example]]:
  """Reads one split as a data config describes (see `config.py`).

  Args:
    data_cfg: a ConfigDict (or any object with the same attributes) with fields
      task, source, data_dir, train_file, eval_files, format, column_names,
      text_columns, label_column, labels, skip_bad_rows, max_train_examples,
      download, and for the few-shot sources fewshot_k, fewshot_seed,
      fewshot_per_class, sample_source.
    split: 'train' or one of the task's eval splits.

  Returns:
    (task spec, examples in file order; for 'train' at most max_train_examples
    of them when that is positive).
  """
  task = task_from_config(data_cfg)
  if split != 'train' and split not in task.eval_splits:
    raise ValueError(f'Task {task.name!r} has no split {split!r}; splits: '
                     f'train, {", ".join(task.eval_splits)}.')
  source = _get(data_cfg, 'source', 'glue_tsv')
  skip = bool(_get(data_cfg, 'skip_bad_rows', False))
  data_dir = _get(data_cfg, 'data_dir', '')
  if source == 'glue_tsv':
    if task.name not in GLUE_LAYOUTS:
      raise ValueError(f'Task {task.name!r} has no GLUE TSV layout; use '
                       'source="custom".')
    root = Path(data_dir) if data_dir else SAMPLES_DIR
    path = root / GLUE_LAYOUTS[task.name].dirname / f'{split}.tsv'
    examples, where = read_glue_tsv(task, path, skip_bad_rows=skip), path
  elif source == 'tfds':
    examples = read_tfds(task, split, data_dir=data_dir or None,
                         download=bool(_get(data_cfg, 'download', False)),
                         skip_bad_rows=skip)
    where = f'tfds glue/{task.name} (data_dir={data_dir or "default"})'
  elif source in ('fewshot_list', 'lmbff'):
    from adamix_jax.data import fewshot  # pylint: disable=g-import-not-at-top
    examples = fewshot.read_split(
        source, task, split, data_dir, int(_get(data_cfg, 'fewshot_k', 0) or 0),
        int(_get(data_cfg, 'fewshot_seed', 0) or 0), skip_bad_rows=skip)
    where = f'{source} {task.name} {split} (data_dir={data_dir or "bundled"})'
  elif source == 'sample':
    from adamix_jax.data import fewshot  # pylint: disable=g-import-not-at-top
    _, examples = load_examples(_sampled_from(data_cfg), split)
    if split == 'train':
      examples = fewshot.sample_examples(
          examples, int(_get(data_cfg, 'fewshot_k', 0) or 0),
          int(_get(data_cfg, 'fewshot_seed', 0) or 0),
          per_class=bool(_get(data_cfg, 'fewshot_per_class', False)),
          num_labels=None if task.is_regression else task.num_labels)
    where = f'a sample of {_get(data_cfg, "sample_source", "glue_tsv")}'
  elif source == 'custom':
    if split == 'train':
      path = _get(data_cfg, 'train_file', '')
      if not path:
        raise ValueError('source="custom" needs data.train_file.')
    else:
      path = _eval_files(data_cfg).get(split)
      if not path:
        raise ValueError(f'source="custom" has no file for eval split {split!r}: set '
                         "data.eval_files ('path' or 'name=path' entries; the first split "
                         'selects checkpoints).')
    label_column = _get(data_cfg, 'label_column', '') or 'label'
    text_columns = tuple(_get(data_cfg, 'text_columns', ())) or task.text_columns
    examples = read_custom(path, _get(data_cfg, 'format', ''), text_columns,
                           label_column, task,
                           column_names=tuple(_get(data_cfg, 'column_names', ()))
                           or None, skip_bad_rows=skip)
    where = path
  else:
    raise ValueError(f'Unknown data.source {source!r}; expected glue_tsv, tfds, '
                     'custom, fewshot_list, lmbff or sample.')
  if not examples:
    raise DataError(f'{where}: no examples in split {split!r}.')
  limit = int(_get(data_cfg, 'max_train_examples', 0) or 0)
  if split == 'train' and limit > 0:
    examples = examples[:limit]
  return task, examples
