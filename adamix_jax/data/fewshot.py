"""Few-shot split folders, shared by the sources 'fewshot_list' (`fewshot_list.py`, LiST's
splits) and 'lmbff' (`lmbff.py`, LM-BFF's): `<data_dir>/<TASK>/<K>-<seed>/` folders of
`<split>.tsv` or `<split>.csv` files.

File formats, as distributed: GLUE-layout TSVs (`read_glue_tsv`) except LiST's
headerless SST-2 train files (`sentence<TAB>label`) and MNLI train files (`index genre
sentence1 sentence2 label`); subj/mpqa/mr/cr are headerless `label,text` CSVs; SNLI
rows carry one to five annotator labels, the gold label last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adamix_jax.data.config import field
from adamix_jax.data.custom import read_custom
from adamix_jax.data.formats import DataError, Example, RowParser, read_text, text_lines
from adamix_jax.data.glue import GLUE_LAYOUTS, read_glue_tsv
from adamix_jax.data.tasks import TaskSpec, task_key

# The bundled LiST splits (<TASK>/30-<seed>/train, cut test files), the default
# `data_dir` of source='fewshot_list'.
LIST_SAMPLES_DIR = Path(__file__).resolve().parent / 'samples' / 'few-shot-list'

# Single-sentence tasks stored as headerless `label,text` CSV by LM-BFF and LiST.
_CSV_TASKS = ('subj', 'mpqa', 'mr', 'cr')


def folder_settings(data_cfg: Any, source: str) -> tuple[str, int, int]:
  """(data.data_dir, data.fewshot_k, data.fewshot_seed); K is required."""
  k = int(field(data_cfg, 'fewshot_k', 0) or 0)
  if k <= 0:
    raise ValueError(f'source={source!r} needs data.fewshot_k (the K of the '
                     '<K>-<seed> folders: LiST 10, 20 or 30 in total; LM-BFF 16 '
                     'per class).')
  return (field(data_cfg, 'data_dir', ''), k, int(field(data_cfg, 'fewshot_seed', 0) or 0))


def task_dir(root: str | Path, task: TaskSpec) -> Path:
  """`root`'s folder for `task`, matched by normalised name ('SST-2' ~ 'sst2')."""
  root = Path(root)
  if not root.is_dir():
    raise DataError(f'{root}: no such directory.')
  found = [d for d in sorted(root.iterdir())
           if d.is_dir() and task_key(d.name) == task_key(task.name)]
  if len(found) != 1:
    raise DataError(f'{root}: expected one folder for task {task.name!r}, found '
                    f'{[d.name for d in found]}; folders: '
                    f'{sorted(d.name for d in root.iterdir() if d.is_dir())}.')
  return found[0]


def split_dir(root: str | Path, task: TaskSpec, k: int, seed: int) -> Path:
  """`<root>/<TASK>/<k>-<seed>`, or an error listing the folders there are."""
  base = task_dir(root, task)
  path = base / f'{int(k)}-{int(seed)}'
  if not path.is_dir():
    have = sorted(d.name for d in base.iterdir() if d.is_dir())
    raise DataError(f'{path}: no such split folder (data.fewshot_k={k}, '
                    f'data.fewshot_seed={seed}); {base} has {have}.')
  return path


def split_file(folder: Path, split: str) -> Path | None:
  """`<folder>/<split>.tsv` or, failing that, `.csv`; None if neither is there."""
  for suffix in ('.tsv', '.csv'):
    if (folder / f'{split}{suffix}').is_file():
      return folder / f'{split}{suffix}'
  return None


def find_split_file(folder: Path, split: str) -> Path:
  """`split_file`, or an error listing what the folder holds."""
  path = split_file(folder, split)
  if path is None:
    raise DataError(f'{folder}/{split}.tsv (or .csv): no such file; {folder} has '
                    f'{sorted(p.name for p in folder.iterdir())}.')
  return path


def _snli_records(path: Path):
  """SNLI TSV rows: text at columns 7 and 8, gold label last (rows have 11 or 15
  fields: one or five annotator labels), as LM-BFF's SnliProcessor reads them."""
  lines = text_lines(read_text(path))
  for line_no, line in enumerate(lines[1:], start=2):
    fields = line.split('\t')
    if len(fields) < 10:
      yield line_no, DataError(f'{path}:{line_no}: {len(fields)} tab-separated '
                               'fields, expected at least 10.')
    else:
      yield line_no, fields


def read_file(task: TaskSpec, path: str | Path, *, layout: str = 'glue',
              skip_bad_rows: bool = False) -> list[Example]:
  """Reads one few-shot file.

  Args:
    task: a registered task.
    path: the file.
    layout: 'glue' (GLUE TSV, or `label,text` CSV for single-sentence non-GLUE
      tasks, or SNLI's TSV), 'list_sst2' (headerless `sentence<TAB>label`) or
      'list_mnli' (headerless `index genre sentence1 sentence2 label`).
    skip_bad_rows: count and log bad rows instead of raising on the first.
  """
  path = Path(path)
  if layout == 'list_sst2':
    return read_custom(path, 'tsv', ('sentence',), 'label', task,
                               column_names=('sentence', 'label'),
                               skip_bad_rows=skip_bad_rows)
  if layout == 'list_mnli':
    return read_custom(
        path, 'tsv', ('sentence1', 'sentence2'), 'label', task,
        column_names=('index', 'genre', 'sentence1', 'sentence2', 'label'),
        skip_bad_rows=skip_bad_rows)
  if layout != 'glue':
    raise ValueError(f'Unknown few-shot file layout {layout!r}.')
  if task.name in GLUE_LAYOUTS:
    return read_glue_tsv(task, path, skip_bad_rows=skip_bad_rows)
  if task.name in _CSV_TASKS:
    return read_custom(path, 'csv', ('sentence',), 'label', task,
                               column_names=('label', 'sentence'),
                               skip_bad_rows=skip_bad_rows)
  if task.name == 'snli':
    parser = RowParser(task, (7, 8), -1, skip_bad_rows, str(path))
    return parser.parse(_snli_records(path))
  raise ValueError(f'No few-shot file layout for task {task.name!r}; known: '
                   f'{sorted((*GLUE_LAYOUTS, *_CSV_TASKS, "snli"))}.')
