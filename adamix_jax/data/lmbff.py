"""Source 'lmbff': LM-BFF's k-shot splits (Gao et al., 2021).

`<data_dir>/<TASK>/<K>-<seed>/{train,dev,test}.{tsv,csv}` hold K examples **per class** in
train and dev (K=16; seeds 13, 21, 42, 87, 100); test is the full GLUE dev set (MNLI:
dev_matched, test_matched, test_mismatched). Eval splits: 'dev' (model selection) and
'test', those present in the folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from absl import logging

from adamix_jax.data.config import field
from adamix_jax.data.fewshot import (find_split_file, folder_settings, read_file, split_dir,
                                     split_file)
from adamix_jax.data.formats import DataError, Example
from adamix_jax.data.tasks import TaskSpec, get_task

NAME = 'lmbff'


def _folder(data_cfg: Any, spec: TaskSpec) -> Path:
  data_dir, k, seed = folder_settings(data_cfg, NAME)
  if not data_dir:
    raise ValueError('source="lmbff" needs data.data_dir (the LM-BFF k-shot '
                     'folder holding <TASK>/<K>-<seed>/).')
  return split_dir(Path(data_dir), spec, k, seed)


def task(data_cfg: Any) -> TaskSpec:
  """The registered task `data.task` names, with the eval splits its folder holds: ('dev',
  'test') or, for MNLI, ('dev_matched', 'test_matched', 'test_mismatched'); a missing
  test file is logged, a missing dev file raises."""
  spec = get_task(field(data_cfg, 'task', ''))
  folder = _folder(data_cfg, spec)
  splits = (('dev_matched', 'test_matched', 'test_mismatched')
            if spec.name == 'mnli' else ('dev', 'test'))
  present = tuple(s for s in splits if split_file(folder, s) is not None)
  if not present or present[0] != splits[0]:
    raise DataError(f'{folder}: no {splits[0]}.tsv/.csv, the LM-BFF model-'
                    'selection split.')
  if present != splits:
    logging.warning('%s: no %s file(s); evaluating on %s only.', folder,
                    [s for s in splits if s not in present], list(present))
  return dataclasses.replace(spec, eval_splits=present)


def read(data_cfg: Any, spec: TaskSpec, split: str) -> tuple[list[Example], str]:
  """`<K>-<seed>/<split>`; returns also a description of where it came from."""
  path = find_split_file(_folder(data_cfg, spec), split)
  examples = read_file(spec, path, skip_bad_rows=bool(field(data_cfg, 'skip_bad_rows', False)))
  data_dir = field(data_cfg, 'data_dir', '')
  return examples, f'{NAME} {spec.name} {split} (data_dir={data_dir or "bundled"})'
