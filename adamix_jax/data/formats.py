"""File formats and row checking, shared by every data source.

The record readers (`tsv_records`, `csv_records`, `jsonl_records`) turn a file into
(1-based line number, record) pairs; `RowParser` turns records into `Example`s.
Everything is strict: a missing file or column, a label outside the task's label set,
a non-numeric regression score, an empty text or a malformed line raises a `DataError`
whose message starts with `<file>:<line>:`. With `skip_bad_rows=True` row-level
problems are counted and logged instead (never silently dropped); file-level problems
always raise.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from absl import logging

from adamix_jax.data.tasks import TaskSpec

# How many row errors a skip report quotes in full.
_ERRORS_QUOTED = 5

# (1-based line number, record) pairs; a line the format rejected comes as a DataError.
Records = Iterator[tuple[int, Any]]


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


# ----------------------------------------------------------------------------
# Turning records into Examples.


class RowParser:
  """Validates records one by one, raising or counting row errors.

  Args:
    task: gives the label set (or regression) labels are checked against.
    text_columns: the record keys (or indices) of the one or two texts.
    label_column: the record key (or index) of the label; None reads no label and
      gives every example a placeholder (class 0, or 0.0 for regression).
    skip_bad_rows: count and log bad rows instead of raising on the first.
    source: what the records come from, starting every error message.
  """

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

  def parse(self, records: Records) -> list[Example]:
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
    if self.label_column is None:
      return Example(tuple(texts), 0.0 if self.task.is_regression else 0)
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


def check_columns(source: str, header: Sequence[str],
                  columns: Sequence[Any]) -> None:
  """Raises naming the columns of `columns` that `header` lacks."""
  missing = [c for c in columns if c not in header]
  if missing:
    raise DataError(f'{source}:1: missing column(s) {missing}; the header has '
                    f'{list(header)}.')


# ----------------------------------------------------------------------------
# File formats. Each yields (1-based line number, record) pairs.


def read_text(path: Path) -> str:
  """The file's text, decoded as UTF-8 (a leading BOM dropped)."""
  if not path.is_file():
    raise DataError(f'{path}: no such file.')
  data = path.read_bytes()
  try:
    # utf-8-sig drops the BOM that GLUE's MRPC files start with.
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise DataError(f'{path}:{line}: not valid UTF-8 ({e.reason}).') from None


def text_lines(text: str) -> list[str]:
  """The lines of `text`, without line ends and without blank lines at its end."""
  lines = text.split('\n')
  while lines and not lines[-1].strip():  # trailing newline(s) at end of file
    lines.pop()
  return [line[:-1] if line.endswith('\r') else line for line in lines]


def tsv_records(path: Path, column_names: Sequence[str] | None,
                num_columns: int | None = None) -> tuple[list[str] | None, Records]:
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
  lines = text_lines(read_text(path))
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


def csv_records(path: Path, column_names: Sequence[str] | None
                ) -> tuple[list[str], Records]:
  """Standard CSV (quoting on); records may span lines inside quotes.

  Args:
    path: the file.
    column_names: names for a headerless file; None (or ()) reads the header line.

  Returns:
    (header, iterator of (line number, dict)); as `tsv_records`.
  """
  reader = csv.reader(io.StringIO(read_text(path), newline=''), strict=True)
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


def jsonl_records(path: Path) -> Records:
  """One JSON object per line."""
  for line_no, line in enumerate(text_lines(read_text(path)), start=1):
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
