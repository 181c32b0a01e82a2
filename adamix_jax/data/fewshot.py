"""Sources 'fewshot_list' and 'lmbff': LiST's and LM-BFF's k-shot split folders.

* LiST (Wang et al., 2021), the instances the AdaMix paper trains its few-shot models
  on: `<data_dir>/<TASK>/<K>-<seed>/train.{tsv,csv}` with K labelled examples **in
  total** (K in 10, 20, 30; seeds 1-5) and one `<TASK>/test.{tsv,csv}` for all seeds
  (for SST-2/RTE the GLUE dev set). No dev set: the protocol trains a fixed number of
  steps. Eval split: 'test'.
* LM-BFF (Gao et al., 2021): `<data_dir>/<TASK>/<K>-<seed>/{train,dev,test}.{tsv,csv}`
  with K examples **per class** in train and dev (K=16; seeds 13, 21, 42, 87, 100);
  test is the full GLUE dev set (MNLI: dev_matched, test_matched, test_mismatched).
  Eval splits: 'dev' (model selection) and 'test', those present in the folder.

File formats, as distributed: GLUE-layout TSVs (`read_glue_tsv`) except LiST's
headerless SST-2 train files (`sentence<TAB>label`) and MNLI train files (`index genre
sentence1 sentence2 label`); subj/mpqa/mr/cr are headerless `label,text` CSVs; SNLI
rows carry one to five annotator labels, the gold label last.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from absl import logging

from adamix_jax.data.config import field
from adamix_jax.data.custom import read_custom
from adamix_jax.data.formats import DataError, Example, RowParser, read_text, text_lines
from adamix_jax.data.glue import GLUE_LAYOUTS, read_glue_tsv
from adamix_jax.data.tasks import TaskSpec, get_task, task_key

# The bundled LiST splits (<TASK>/30-<seed>/train, cut test files), the default
# `data_dir` of source='fewshot_list'.
LIST_SAMPLES_DIR = Path(__file__).resolve().parent / 'samples' / 'few-shot-list'

SOURCES = ('fewshot_list', 'lmbff')
# Single-sentence tasks stored as headerless `label,text` CSV by LM-BFF and LiST.
_CSV_TASKS = ('subj', 'mpqa', 'mr', 'cr')


def resolve_data_dir(source: str, data_dir: str | Path, k: int) -> Path:
  """The folder holding <TASK>/ folders ('' = the bundled LiST sample)."""
  if source not in SOURCES:
    raise ValueError(f'Not a few-shot source: {source!r}; expected {SOURCES}.')
  if int(k) <= 0:
    raise ValueError(f'source={source!r} needs data.fewshot_k (the K of the '
                     '<K>-<seed> folders: LiST 10, 20 or 30 in total; LM-BFF 16 '
                     'per class).')
  if data_dir:
    return Path(data_dir)
  if source == 'lmbff':
    raise ValueError('source="lmbff" needs data.data_dir (the LM-BFF k-shot '
                     'folder holding <TASK>/<K>-<seed>/).')
  return LIST_SAMPLES_DIR


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


def _split_file(folder: Path, split: str) -> Path | None:
  for suffix in ('.tsv', '.csv'):
    if (folder / f'{split}{suffix}').is_file():
      return folder / f'{split}{suffix}'
  return None


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


def _list_layout(task: TaskSpec, split: str) -> str:
  if split == 'train' and task.name == 'sst2':
    return 'list_sst2'
  if split == 'train' and task.name == 'mnli':
    return 'list_mnli'
  return 'glue'  # RTE/QQP train, and the test files, keep their source layout


def eval_splits(source: str, task: TaskSpec, data_dir: str | Path, k: int,
                seed: int) -> tuple[str, ...]:
  """The labelled evaluation splits of a few-shot source (the first selects).

  LiST: ('test',). LM-BFF: ('dev', 'test') or, for MNLI, ('dev_matched',
  'test_matched', 'test_mismatched'), keeping those whose file is in the folder
  (a missing test file is logged; a missing dev file raises).
  """
  data_dir = resolve_data_dir(source, data_dir, k)
  if source == 'fewshot_list':
    return ('test',)
  splits = (('dev_matched', 'test_matched', 'test_mismatched')
            if task.name == 'mnli' else ('dev', 'test'))
  folder = split_dir(data_dir, task, k, seed)
  present = tuple(s for s in splits if _split_file(folder, s) is not None)
  if not present or present[0] != splits[0]:
    raise DataError(f'{folder}: no {splits[0]}.tsv/.csv, the LM-BFF model-'
                    'selection split.')
  if present != splits:
    logging.warning('%s: no %s file(s); evaluating on %s only.', folder,
                    [s for s in splits if s not in present], list(present))
  return present


def read_split(source: str, task: TaskSpec | str, split: str,
               data_dir: str | Path, k: int, seed: int, *,
               skip_bad_rows: bool = False) -> list[Example]:
  """One split of a LiST or LM-BFF few-shot folder.

  Args:
    source: 'fewshot_list' or 'lmbff'.
    task: a registered task (or its name).
    split: 'train' or one of `eval_splits(...)`.
    data_dir: the folder holding <TASK>/ folders ('' = the bundled LiST sample
      for fewshot_list).
    k: K of the `<K>-<seed>` folder (LiST: examples in total; LM-BFF: per class).
    seed: the split's seed.
    skip_bad_rows: count and log bad rows instead of raising on the first.

  Returns:
    The file's examples in file order.
  """
  task = get_task(task) if isinstance(task, str) else task
  data_dir = resolve_data_dir(source, data_dir, k)
  folder = split_dir(data_dir, task, k, seed)
  if source == 'fewshot_list' and split != 'train':
    folder = folder.parent  # one test file for all seeds
  path = _split_file(folder, split)
  if path is None:
    raise DataError(f'{folder}/{split}.tsv (or .csv): no such file; {folder} has '
                    f'{sorted(p.name for p in folder.iterdir())}.')
  if source == 'fewshot_list' and split != 'train' and (
      data_dir == LIST_SAMPLES_DIR):
    logging.warning('%s is a cut of the LiST test file bundled for smoke tests; '
                    'set data.data_dir to the full few-shot folder for real '
                    'numbers.', path)
  layout = _list_layout(task, split) if source == 'fewshot_list' else 'glue'
  return read_file(task, path, layout=layout, skip_bad_rows=skip_bad_rows)


# ----------------------------------------------------------------------------
# The sources: data.data_dir, data.fewshot_k, data.fewshot_seed.


def task(data_cfg: Any, *, source: str) -> TaskSpec:
  """The registered task `data.task` names, with the eval splits of its split folder
  (`eval_splits`)."""
  spec = get_task(field(data_cfg, 'task', ''))
  return dataclasses.replace(spec, eval_splits=eval_splits(
      source, spec, field(data_cfg, 'data_dir', ''),
      int(field(data_cfg, 'fewshot_k', 0) or 0),
      int(field(data_cfg, 'fewshot_seed', 0) or 0)))


def read(data_cfg: Any, spec: TaskSpec, split: str, *,
         source: str) -> tuple[list[Example], str]:
  """One split of the configured folder (`read_split`); returns also a description of
  where it came from."""
  data_dir = field(data_cfg, 'data_dir', '')
  examples = read_split(
      source, spec, split, data_dir, int(field(data_cfg, 'fewshot_k', 0) or 0),
      int(field(data_cfg, 'fewshot_seed', 0) or 0),
      skip_bad_rows=bool(field(data_cfg, 'skip_bad_rows', False)))
  return examples, f'{source} {spec.name} {split} (data_dir={data_dir or "bundled"})'
