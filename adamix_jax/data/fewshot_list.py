"""Source 'fewshot_list': LiST's few-shot splits (Wang et al., 2021), the instances the
AdaMix paper trains its few-shot models on.

`<data_dir>/<TASK>/<K>-<seed>/train.{tsv,csv}` holds K labelled examples **in total** (K in
10, 20, 30; seeds 1-5) and one `<TASK>/test.{tsv,csv}` serves all seeds (for SST-2/RTE the
GLUE dev set). No dev set: the protocol trains a fixed number of steps. Eval split: 'test'.
`data_dir` '' reads the bundled K=30 sample, whose test files are 100-row cuts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from absl import logging

from adamix_jax.data.config import field
from adamix_jax.data.fewshot import (LIST_SAMPLES_DIR, find_split_file, folder_settings,
                                     read_file, split_dir)
from adamix_jax.data.formats import Example
from adamix_jax.data.tasks import TaskSpec, get_task

NAME = 'fewshot_list'


def _root(data_dir: str) -> Path:
  return Path(data_dir) if data_dir else LIST_SAMPLES_DIR


def _train_layout(spec: TaskSpec) -> str:
  """LiST rewrote the SST-2 and MNLI train files headerless; RTE/QQP train files, and the
  test files, keep their source layout."""
  return {'sst2': 'list_sst2', 'mnli': 'list_mnli'}.get(spec.name, 'glue')


def task(data_cfg: Any) -> TaskSpec:
  """The registered task `data.task` names, evaluated on 'test'."""
  spec = get_task(field(data_cfg, 'task', ''))
  folder_settings(data_cfg, NAME)
  return dataclasses.replace(spec, eval_splits=('test',))


def read(data_cfg: Any, spec: TaskSpec, split: str) -> tuple[list[Example], str]:
  """The split's file: `<K>-<seed>/train`, or the task's one test file; returns also a
  description of where it came from."""
  data_dir, k, seed = folder_settings(data_cfg, NAME)
  root = _root(data_dir)
  folder = split_dir(root, spec, k, seed)
  if split != 'train':
    folder = folder.parent  # one test file for all seeds
  path = find_split_file(folder, split)
  if split != 'train' and root == LIST_SAMPLES_DIR:
    logging.warning('%s is a cut of the LiST test file bundled for smoke tests; '
                    'set data.data_dir to the full few-shot folder for real '
                    'numbers.', path)
  examples = read_file(spec, path, layout=_train_layout(spec) if split == 'train' else 'glue',
                       skip_bad_rows=bool(field(data_cfg, 'skip_bad_rows', False)))
  return examples, f'{NAME} {spec.name} {split} (data_dir={data_dir or "bundled"})'
