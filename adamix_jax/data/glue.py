"""Source 'glue_tsv': the GLUE-distributed TSVs, glue_data/<TASK>/{train,dev}.tsv."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from adamix_jax.data.config import field
from adamix_jax.data.formats import Example, RowParser, check_columns, tsv_records
from adamix_jax.data.tasks import TaskSpec, get_task

# The bundled GLUE samples (<TASK>/{train,dev}.tsv), the default `data_dir`.
SAMPLES_DIR = Path(__file__).resolve().parent / 'samples' / 'glue'


@dataclasses.dataclass(frozen=True)
class GlueLayout:
  """Where a task's fields sit in the GLUE-distributed TSVs."""
  dirname: str
  text_columns: tuple[str | int, ...]  # header names; indices when no header
  label_column: str | int
  header: bool = True
  num_columns: int | None = None  # only needed without a header


# Column names as distributed in glue_data/ (download_glue_data.py); MRPC's first
# header cell carries a UTF-8 BOM, which decoding with utf-8-sig removes.
GLUE_LAYOUTS: dict[str, GlueLayout] = {
    # CoLA train/dev: source, label, original judgement, sentence; no header.
    'cola': GlueLayout('CoLA', (3,), 1, header=False, num_columns=4),
    'sst2': GlueLayout('SST-2', ('sentence',), 'label'),
    'mrpc': GlueLayout('MRPC', ('#1 String', '#2 String'), 'Quality'),
    'qqp': GlueLayout('QQP', ('question1', 'question2'), 'is_duplicate'),
    'stsb': GlueLayout('STS-B', ('sentence1', 'sentence2'), 'score'),
    'mnli': GlueLayout('MNLI', ('sentence1', 'sentence2'), 'gold_label'),
    'qnli': GlueLayout('QNLI', ('question', 'sentence'), 'label'),
    'rte': GlueLayout('RTE', ('sentence1', 'sentence2'), 'label'),
}


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
  header, records = tsv_records(path, None, None if layout.header
                                else layout.num_columns)
  if header is not None:
    check_columns(str(path), header, (*layout.text_columns, layout.label_column))
  parser = RowParser(task, layout.text_columns, layout.label_column,
                     skip_bad_rows, str(path))
  return parser.parse(records)


def task(data_cfg: Any) -> TaskSpec:
  """The registered task `data.task` names."""
  return get_task(field(data_cfg, 'task', ''))


def read(data_cfg: Any, spec: TaskSpec, split: str) -> tuple[list[Example], str]:
  """`<data_dir>/<TASK>/<split>.tsv` ('' = the bundled sample); returns also the path."""
  if spec.name not in GLUE_LAYOUTS:
    raise ValueError(f'Task {spec.name!r} has no GLUE TSV layout; use '
                     'source="custom".')
  data_dir = field(data_cfg, 'data_dir', '')
  root = Path(data_dir) if data_dir else SAMPLES_DIR
  path = root / GLUE_LAYOUTS[spec.name].dirname / f'{split}.tsv'
  skip = bool(field(data_cfg, 'skip_bad_rows', False))
  return read_glue_tsv(spec, path, skip_bad_rows=skip), str(path)
