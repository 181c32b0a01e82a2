"""Source 'custom': your own CSV, TSV or JSONL files (`data.train_file`, `data.eval_files`).

`read_table` opens a file of any of the three formats (headerless CSV/TSV through
`column_names`), `table_examples` checks its rows into examples; `read_custom` is the
two together, as training reads. Prediction (`adamix_jax.predict`) reads its input files
with the same functions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import re
from typing import Any, Mapping, Sequence

from adamix_jax.data.config import field
from adamix_jax.data.formats import (DataError, Example, Records, RowParser, check_columns,
                                     csv_records, jsonl_records, tsv_records)
from adamix_jax.data.tasks import TaskSpec, custom_task, get_task


@dataclasses.dataclass
class Table:
  """An opened CSV, TSV or JSONL file.

  Attributes:
    path: the file.
    header: the column names (a CSV/TSV's header line or its `column_names`); None for
      JSONL, whose rows name their own fields.
    records: (1-based line number, record) pairs, read lazily.
  """
  path: Path
  header: list[str] | None
  records: Records

  def has_column(self, name: str) -> bool:
    """Whether the header names `name`; for JSONL, whether the first object has it."""
    if self.header is not None:
      return name in self.header
    records = list(self.records)
    self.records = iter(records)
    return name in next((r for _, r in records if isinstance(r, dict)), {})


def file_format(path: str | Path, fmt: str = '') -> str:
  """`fmt` lower-cased, or when empty the file's extension: 'csv', 'tsv', 'jsonl', ..."""
  return (fmt or Path(path).suffix.lstrip('.')).lower()


def read_table(path: str | Path, fmt: str = '', *,
               column_names: Sequence[str] | None = None) -> Table:
  """Opens a CSV (quoting on), TSV (GLUE-style, quoting off) or JSONL file.

  Args:
    path: the file.
    fmt: 'csv', 'tsv' or 'jsonl'; '' infers it from the extension.
    column_names: for a CSV/TSV without a header line, the names of its columns;
      None (or ()) means the first line is the header. JSONL ignores them.

  Returns:
    The table; its rows are checked when its records are read.
  """
  path = Path(path)
  fmt = file_format(path, fmt)
  if fmt == 'jsonl':
    return Table(path, None, jsonl_records(path))
  if fmt not in ('csv', 'tsv'):
    raise DataError(f'{path}: unknown format {fmt!r}; expected csv, tsv or '
                    'jsonl (set data.format or use one of those extensions).')
  column_names = tuple(column_names or ()) or None
  header, records = (csv_records(path, column_names) if fmt == 'csv' else
                     tsv_records(path, column_names))
  return Table(path, header, records)


def table_examples(table: Table, task: TaskSpec, text_columns: Sequence[str],
                   label_column: str | None, *, skip_bad_rows: bool = False
                   ) -> list[Example]:
  """The table's rows as examples, checked against `task`.

  Args:
    table: from `read_table`.
    task: gives the label set (or regression) that labels are checked against.
    text_columns: the one or two columns holding text, in order.
    label_column: the column holding the label; None reads no labels (every example
      gets a placeholder label that nothing should read).
    skip_bad_rows: count and log bad rows instead of raising on the first.
  """
  if table.header is not None:
    columns = (*text_columns, *(() if label_column is None else (label_column,)))
    check_columns(str(table.path), table.header, columns)
  parser = RowParser(task, text_columns, label_column, skip_bad_rows, str(table.path))
  return parser.parse(table.records)


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
  return table_examples(read_table(path, fmt, column_names=column_names), task,
                        text_columns, label_column, skip_bad_rows=skip_bad_rows)


# ----------------------------------------------------------------------------
# The source: data.train_file, data.eval_files, data.format, data.column_names, ...


def eval_files(data_cfg: Any) -> dict[str, str]:
  """{split: path} in the configured order (the first split selects models).

  `eval_files` is a sequence of 'path' or 'name=path' entries (a bare path names
  its split after the file: dev.csv -> 'dev'), a comma-separated string of the
  same, or a mapping {name: path}.
  """
  files = field(data_cfg, 'eval_files', ()) or ()
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


def task(data_cfg: Any) -> TaskSpec:
  """A registered name keeps its label set and metrics, its eval splits become the keys
  of `eval_files`; any other name builds a task from `labels` (or `regression`),
  `text_columns`, `metrics` and `selection_metric`."""
  name = field(data_cfg, 'task', '')
  splits = tuple(eval_files(data_cfg)) or ('dev',)
  labels = field(data_cfg, 'labels')
  regression = bool(field(data_cfg, 'regression', False))
  try:
    spec = get_task(name)
  except ValueError:
    text_columns = tuple(field(data_cfg, 'text_columns', ()))
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
                       metrics=tuple(field(data_cfg, 'metrics', ())) or None,
                       selection_metric=field(data_cfg, 'selection_metric') or None,
                       eval_splits=splits)
  if labels is not None and tuple(str(l) for l in labels) != spec.labels:
    raise ValueError(f'data.labels={tuple(labels)} conflicts with registered '
                     f'task {spec.name!r} labels {spec.labels}; leave labels '
                     'unset or choose another task name.')
  return dataclasses.replace(spec, eval_splits=splits)


def read(data_cfg: Any, spec: TaskSpec, split: str) -> tuple[list[Example], str]:
  """`data.train_file` for 'train', else the split's entry of `data.eval_files`; returns
  also the path."""
  if split == 'train':
    path = field(data_cfg, 'train_file', '')
    if not path:
      raise ValueError('source="custom" needs data.train_file.')
  else:
    path = eval_files(data_cfg).get(split)
    if not path:
      raise ValueError(f'source="custom" has no file for eval split {split!r}: set '
                       "data.eval_files ('path' or 'name=path' entries; the first split "
                       'selects checkpoints).')
  label_column = field(data_cfg, 'label_column', '') or 'label'
  text_columns = tuple(field(data_cfg, 'text_columns', ())) or spec.text_columns
  examples = read_custom(path, field(data_cfg, 'format', ''), text_columns, label_column,
                         spec, column_names=tuple(field(data_cfg, 'column_names', ())) or None,
                         skip_bad_rows=bool(field(data_cfg, 'skip_bad_rows', False)))
  return examples, path


def file_layout(data_cfg: Any) -> dict[str, Any]:
  """How the run's files are written, for reading files like them at prediction time:
  {'format': data.format, 'column_names': [...] (empty: the files have a header line)}."""
  return {'format': str(field(data_cfg, 'format', '') or ''),
          'column_names': [str(c) for c in field(data_cfg, 'column_names', ()) or ()]}
