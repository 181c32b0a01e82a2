"""The data sources: one record each, looked up by `data.source`.

A source turns a data config into its task (`task`, reading no data) and into the
examples of one split (`read`). Every caller asks `get(data.source)`; adding a source
is one module with those two functions and one entry in `SOURCES`.

`task_from_config` and `load_examples` are the config-driven entry points the trainer
uses.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Callable, Mapping

from adamix_jax.data import custom, fewshot_list, glue, lmbff, tfds_glue
from adamix_jax.data.config import field
from adamix_jax.data.formats import DataError, Example
from adamix_jax.data.sample import sample_examples
from adamix_jax.data.tasks import TaskSpec


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where examples come from.

  Attributes:
    name: the `data.source` value.
    task: data config -> the task it describes (labels, metrics, eval splits), without
      reading any data.
    read: (data config, its task, split) -> (the split's examples in file order, where
      they came from, for messages).
    full_training_set: holds a task's whole training set, so that source 'sample' can
      draw from it (a few-shot folder holds a sample already).
    split_seed: `data.fewshot_seed` chooses its training split; 0 there means the run's
      seed (`config.seed`), so that a sweep over seeds walks over the splits.
    file_layout: data config -> how its files are written ({'format', 'column_names'}),
      recorded in an export so that prediction reads files like them; None when there is
      nothing to record.
  """

  name: str
  task: Callable[[Any], TaskSpec]
  read: Callable[[Any, TaskSpec, str], tuple[list[Example], str]]
  full_training_set: bool = True
  split_seed: bool = False
  file_layout: Callable[[Any], Mapping[str, Any] | None] = lambda data_cfg: None


class _Overridden:
  """`cfg` with some fields replaced (a view; `cfg` itself is not changed)."""

  def __init__(self, cfg: Any, **fields: Any):
    self._cfg, self._fields = cfg, fields

  def __getattr__(self, name: str) -> Any:
    if name in self._fields:
      return self._fields[name]
    return getattr(self._cfg, name)


# ----------------------------------------------------------------------------
# Source 'sample': K examples of another source's training set.


def _sampled_from(data_cfg: Any) -> Any:
  """For source='sample', the config of the source the full data comes from."""
  inner = field(data_cfg, 'sample_source', 'glue_tsv')
  if inner in SOURCES and not SOURCES[inner].full_training_set:
    raise ValueError(f'data.sample_source={inner!r}: sample from a full training '
                     f'set ({_either(FULL_TRAINING_SETS)}).')
  return _Overridden(data_cfg, source=inner, max_train_examples=0)


def _sample_task(data_cfg: Any) -> TaskSpec:
  """The task of `sample_source` (its eval splits too)."""
  return task_from_config(_sampled_from(data_cfg))


def _sample_read(data_cfg: Any, spec: TaskSpec, split: str) -> tuple[list[Example], str]:
  """`fewshot_k` examples (per class with `fewshot_per_class`) of the training set,
  drawn with `fewshot_seed`; eval splits whole."""
  _, examples = load_examples(_sampled_from(data_cfg), split)
  if split == 'train':
    examples = sample_examples(
        examples, int(field(data_cfg, 'fewshot_k', 0) or 0),
        int(field(data_cfg, 'fewshot_seed', 0) or 0),
        per_class=bool(field(data_cfg, 'fewshot_per_class', False)),
        num_labels=None if spec.is_regression else spec.num_labels)
  return examples, f'a sample of {field(data_cfg, "sample_source", "glue_tsv")}'


def _sample_file_layout(data_cfg: Any) -> Mapping[str, Any] | None:
  inner = _sampled_from(data_cfg)
  return get(inner.source).file_layout(inner)


# ----------------------------------------------------------------------------
# The registry.


SOURCES: Mapping[str, DataSource] = MappingProxyType({s.name: s for s in (
    DataSource('glue_tsv', glue.task, glue.read),
    DataSource('tfds', tfds_glue.task, tfds_glue.read),
    DataSource('custom', custom.task, custom.read, file_layout=custom.file_layout),
    DataSource('fewshot_list', fewshot_list.task, fewshot_list.read,
               full_training_set=False, split_seed=True),
    DataSource('lmbff', lmbff.task, lmbff.read, full_training_set=False, split_seed=True),
    DataSource('sample', _sample_task, _sample_read, full_training_set=False,
               split_seed=True, file_layout=_sample_file_layout),
)})
NAMES = tuple(SOURCES)
FULL_TRAINING_SETS = tuple(name for name, s in SOURCES.items() if s.full_training_set)


def _either(names: tuple[str, ...]) -> str:
  return f'{", ".join(names[:-1])} or {names[-1]}'


def get(name: str) -> DataSource:
  """The source called `name`; an unknown name is refused, listing the known ones."""
  try:
    return SOURCES[name]
  except (KeyError, TypeError):
    raise ValueError(f'Unknown data.source {name!r}; expected {_either(NAMES)}.') from None


# ----------------------------------------------------------------------------
# The config-driven entry points.


def task_from_config(data_cfg: Any) -> TaskSpec:
  """The TaskSpec a data config describes, without reading any data.

  A registered name keeps its label set and metrics whatever the source; for
  source='custom' its eval splits become the keys of `eval_files`, for the few-shot
  sources those of the split folder (`fewshot_list.task`, `lmbff.task`), for source='sample'
  those of `sample_source`. Any other name with source='custom' builds a task from
  `labels`, `text_columns`, `metrics` and `selection_metric`.
  """
  return get(field(data_cfg, 'source', 'glue_tsv')).task(data_cfg)


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
  source = get(field(data_cfg, 'source', 'glue_tsv'))
  task = source.task(data_cfg)
  if split != 'train' and split not in task.eval_splits:
    raise ValueError(f'Task {task.name!r} has no split {split!r}; splits: '
                     f'train, {", ".join(task.eval_splits)}.')
  examples, where = source.read(data_cfg, task, split)
  if not examples:
    raise DataError(f'{where}: no examples in split {split!r}.')
  limit = int(field(data_cfg, 'max_train_examples', 0) or 0)
  if split == 'train' and limit > 0:
    examples = examples[:limit]
  return task, examples


def file_layout(data_cfg: Any) -> Mapping[str, Any] | None:
  """How the configured source's files are written (see `DataSource.file_layout`)."""
  return get(field(data_cfg, 'source', 'glue_tsv')).file_layout(data_cfg)
