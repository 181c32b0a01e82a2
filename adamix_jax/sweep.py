"""Sweeps: the runs of seeds x tasks x methods, their configs and their workdirs.

`plan` builds every run's config, in this order, from:
1. a config file: the base file, or for a task other than the base config's own task the
   base file's sibling named for that task when it exists (`config_file_for`);
2. a per-method preset (`experiments/sweep.py` passes `configs.presets.method_preset`);
3. command-line overrides {dotted field: value} (they win over the preset);
4. the run's method, seed and data.task.
Run (task, method, seed) trains in ROOT/<task>/<method>/seed_<seed>. `run_sweep` trains the
runs one after another, skipping those whose results.json exists; an unfinished one resumes
from its latest checkpoint (`train.train_and_evaluate` does that). A run already in the root
that was trained with another config is refused, not skipped or resumed. On several hosts the
root must be on storage every host sees, as the checkpoints already must be.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import logging
from etils import epath
from flax import traverse_util
import ml_collections

from adamix_jax import config_fields, registry, train
from adamix_jax.data.tasks import get_task
from adamix_jax.runs import validate_config

Preset = Callable[[ml_collections.ConfigDict, str], ml_collections.ConfigDict]

# Set per run from --seeds / --methods / --tasks, never by an override.
RUN_FIELDS = ('method', 'seed', 'data.task')


@dataclasses.dataclass(frozen=True)
class Run:
  """One (task, method, seed) of a sweep: its complete config and where it trains."""

  task: str
  method: str
  seed: int
  workdir: epath.Path  # local, or gs:// (a root every host of a pod sees)
  config: ml_collections.ConfigDict
  config_file: Path

  @property
  def finished(self) -> bool:
    return (self.workdir / 'results.json').exists()


def canonical_task(name: str) -> str:
  """'SST-2' -> 'sst2' for registered tasks; other (custom) names unchanged."""
  try:
    return get_task(name).name
  except ValueError:
    return name


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
  """A fresh `get_config()` of a config file (each run gets its own copy)."""
  path = Path(path)
  spec = importlib.util.spec_from_file_location(
      f'_sweep_config_{re.sub(r"[^0-9a-zA-Z_]", "_", path.stem)}', path)
  if spec is None or not path.is_file():
    raise FileNotFoundError(f'Config file {path} not found.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def config_file_for(task: str, base_file: str | Path, base_task: str) -> Path:
  """The config file of `task`: the base file for the base config's own task; else the
  base file's sibling named for `task` (bert_base_glue_sst2.py -> bert_base_glue_rte.py),
  else glue_<task>.py beside it, else the base file (its data.task is then replaced)."""
  base_file = Path(base_file)
  task, base_task = canonical_task(task), canonical_task(base_task)
  if task == base_task:
    return base_file
  candidates = []
  renamed = re.sub(rf'(?<![a-z0-9]){re.escape(base_task)}(?![a-z0-9])', task,
                   base_file.stem)
  if renamed != base_file.stem:
    candidates.append(base_file.with_name(renamed + base_file.suffix))
  candidates.append(base_file.with_name(f'glue_{task}.py'))
  return next((c for c in candidates if c.is_file()), base_file)


def plan(base_file: str | Path, root: str | os.PathLike, *, tasks: Sequence[str] | None,
         methods: Sequence[str] | None, seeds: Sequence[int],
         overrides: dict[str, Any] | None = None, preset: Preset | None = None) -> list[Run]:
  """Every run of the sweep with its config, tasks outermost, seeds innermost.

  Args:
    base_file: the --config file.
    root: the sweep's root directory.
    tasks, methods: None means the base config's own task / method.
    seeds: the seeds.
    overrides: {dotted field: value} applied after the method preset.
    preset: `preset(config, method)` returns the config set up for the method.
  """
  overrides = dict(overrides or {})
  clash = [f for f in RUN_FIELDS if f in overrides]
  if clash:
    raise ValueError(f'--config.{clash[0]} is set per run: use --seeds, --methods and '
                     '--tasks instead.')
  base = load_config_file(base_file)
  tasks = [canonical_task(t) for t in (tasks or [base.data.task])]
  methods = list(methods or [base.method])
  for method in methods:
    registry.get(method)  # an unknown name is refused here, listing the known ones
  for name, values in (('tasks', tasks), ('methods', methods), ('seeds', list(seeds))):
    if len(set(values)) != len(values):
      raise ValueError(f'--{name} repeats a value: {values}')
  runs = []
  for task in tasks:
    task_file = config_file_for(task, base_file, base.data.task)
    for method in methods:
      for seed in seeds:
        config = load_config_file(task_file)
        if preset is not None:
          config = preset(config, method)
        for field, value in overrides.items():
          config_fields.set_field(config, field, value)
        config.method, config.seed, config.data.task = method, int(seed), task
        validate_config(config)  # fail before the first run, not in the middle
        runs.append(Run(task, method, int(seed),
                        epath.Path(root) / task / method / f'seed_{int(seed)}', config,
                        task_file))
  return runs


def config_changes(run: Run) -> list[str]:
  """How the run's planned config differs from the one its workdir was trained (or started)
  with, as 'field: saved -> planned'; [] for a new run. Fields only one side has (added
  or removed by another version of the code) are not compared."""
  path = run.workdir / 'config.json'
  if not path.is_file():
    return []
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from e
  flat = lambda d: traverse_util.flatten_dict(d, sep='.')
  saved, planned = flat(saved), flat(json.loads(run.config.to_json_best_effort()))
  return [f'{k}: {saved[k]!r} -> {planned[k]!r}'
          for k in sorted(saved.keys() & planned.keys()) if saved[k] != planned[k]]


def status(run: Run) -> tuple[str, str]:
  """For a dry run's listing: 'STALE' (trained with another config), 'done' or 'todo', and
  the changed fields as indented lines ('' when there are none)."""
  changes = config_changes(run)
  word = 'STALE' if changes else 'done' if run.finished else 'todo'
  return word, ''.join(f'\n    {change}' for change in changes)


def check_not_stale(runs: Sequence[Run]) -> None:
  """Refuses a sweep whose finished or started runs were trained with another config: they
  would be skipped (or resumed) and reported as if the new settings had produced them."""
  stale = [(run, changes) for run in runs if (changes := config_changes(run))]
  if stale:
    lines = [f'  {run.workdir}: ' + '; '.join(changes[:5]) +
             (f'; ... ({len(changes) - 5} more)' if len(changes) > 5 else '')
             for run, changes in stale]
    raise ValueError(
        f'{len(stale)} run(s) of this sweep were trained with another config (field: saved '
        '-> now):\n' + '\n'.join(lines) + '\nUse another root, or delete those run '
        'directories to train them again.')


def run_sweep(runs: Sequence[Run]) -> dict[str, list[Run]]:
  """Trains the unfinished runs in order; returns them grouped as trained / skipped /
  failed. A failure (an exception, not an interrupt) is logged and the sweep goes on.

  Raises:
    ValueError: before training anything, when runs already in the root were trained with
      another config (`check_not_stale`)."""
  check_not_stale(runs)
  outcome = {'trained': [], 'skipped': [], 'failed': []}
  for i, run in enumerate(runs, 1):
    where = f'[{i}/{len(runs)}] {run.task} / {run.method} / seed {run.seed}'
    if run.finished:
      logging.info('%s: finished before, skipped (%s exists; delete it to re-run).', where,
                   run.workdir / 'results.json')
      outcome['skipped'].append(run)
      continue
    logging.info('%s: training in %s (config %s)', where, run.workdir, run.config_file)
    try:
      train.train_and_evaluate(run.config, run.workdir)
    except Exception:  # pylint: disable=broad-except
      logging.error('%s failed:\n%s', where, traceback.format_exc())
      outcome['failed'].append(run)
    else:
      outcome['trained'].append(run)
  return outcome
