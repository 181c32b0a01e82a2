"""Task registry: what each GLUE task reads, predicts and reports.

A `TaskSpec` holds only task semantics (text fields, label set, metrics); where the
text lives in a particular file layout is the business of the data sources (`sources.py`).
Labels are ordered as tensorflow-datasets orders them, so a tfds integer label and
an index into `TaskSpec.labels` mean the same class.
"""

from __future__ import annotations

import dataclasses
import re

# Metric names understood by `metrics.compute_metrics`.
METRIC_NAMES = ('accuracy', 'f1', 'mcc', 'pearson', 'spearman', 'combined')


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task: its inputs, its label set and how it is scored.

  Attributes:
    name: canonical lower-case name, e.g. 'sst2'.
    text_columns: names of the one or two text fields of an example (tfds feature
      names for GLUE tasks, file column names for custom data).
    labels: class names in label-index order, or None for a regression task.
    metrics: metrics reported on every eval split, as GLUE reports them.
      'combined' is the mean of the task's other metrics (GLUE's single number for
      MRPC, QQP and STS-B).
    selection_metric: the metric used to pick the best checkpoint, measured on
      `selection_split`.
    eval_splits: the labelled evaluation splits, e.g. ('dev',) or, for MNLI,
      ('dev_matched', 'dev_mismatched'); the first is the selection split.
  """
  name: str
  text_columns: tuple[str, ...]
  labels: tuple[str, ...] | None
  metrics: tuple[str, ...]
  selection_metric: str
  eval_splits: tuple[str, ...] = ('dev',)

  def __post_init__(self):
    # Catch typos at registration time rather than after a full training run.
    if not 1 <= len(self.text_columns) <= 2:
      raise ValueError(f'Task {self.name!r}: expected 1 or 2 text columns, '
                       f'got {self.text_columns!r}.')
    if self.labels is not None and len(self.labels) < 2:
      raise ValueError(f'Task {self.name!r}: a classification task needs at '
                       f'least 2 labels, got {self.labels!r}.')
    if self.labels is not None and len(set(self.labels)) != len(self.labels):
      raise ValueError(f'Task {self.name!r}: duplicate labels in {self.labels!r}.')
    unknown = [m for m in self.metrics if m not in METRIC_NAMES]
    if unknown:
      raise ValueError(f'Task {self.name!r}: unknown metrics {unknown}; '
                       f'known: {METRIC_NAMES}.')
    if self.selection_metric not in self.metrics:
      raise ValueError(f'Task {self.name!r}: selection metric '
                       f'{self.selection_metric!r} is not in {self.metrics}.')
    if not self.eval_splits:
      raise ValueError(f'Task {self.name!r}: needs at least one eval split.')
    if self.is_regression and {'accuracy', 'f1', 'mcc'} & set(self.metrics):
      raise ValueError(f'Task {self.name!r}: classification metrics on a '
                       'regression task.')
    if not self.is_regression and {'pearson', 'spearman'} & set(self.metrics):
      raise ValueError(f'Task {self.name!r}: correlation metrics on a '
                       'classification task.')

  @property
  def is_regression(self) -> bool:
    return self.labels is None

  @property
  def num_labels(self) -> int:
    """Output width of the head: number of classes, or 1 for regression."""
    return 1 if self.labels is None else len(self.labels)

  @property
  def is_pair(self) -> bool:
    return len(self.text_columns) == 2

  @property
  def selection_split(self) -> str:
    return self.eval_splits[0]


_BINARY = ('0', '1')
_NLI2 = ('entailment', 'not_entailment')

_REGISTRY: dict[str, TaskSpec] = {}


def task_key(name: str) -> str:
  """The normalised form of a task name: 'SST-2', 'sst-2', 'sst_2' and 'sst2' are one task."""
  return re.sub(r'[^a-z0-9]', '', name.lower())


def register_task(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
  """Adds `spec` to the registry under its normalised name and returns it."""
  key = task_key(spec.name)
  if key in _REGISTRY and not overwrite and _REGISTRY[key] != spec:
    raise ValueError(f'Task {spec.name!r} is already registered differently; '
                     'pass overwrite=True to replace it.')
  _REGISTRY[key] = spec
  return spec


def get_task(name: str) -> TaskSpec:
  """Looks a task up by name, ignoring case, '-' and '_' ('SST-2' == 'sst2')."""
  try:
    return _REGISTRY[task_key(name)]
  except KeyError:
    raise ValueError(f'Unknown task {name!r}; known tasks: '
                     f'{", ".join(sorted(_REGISTRY))}. Use source="custom" '
                     'with labels/text_columns for other data.') from None


def known_tasks() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def custom_task(name: str,
                text_columns: tuple[str, ...] | list[str],
                labels: tuple[str, ...] | list[str] | None,
                *,
                metrics: tuple[str, ...] | list[str] | None = None,
                selection_metric: str | None = None,
                eval_splits: tuple[str, ...] | list[str] = ('dev',)) -> TaskSpec:
  """Builds (but does not register) a TaskSpec for bring-your-own data.

  Defaults: accuracy for classification (plus F1 on the class at index 1 when
  there are two classes), Pearson and Spearman for regression; selection on the
  first metric.
  """
  labels = None if labels is None else tuple(str(l) for l in labels)
  if not metrics:
    if labels is None:
      metrics = ('pearson', 'spearman')
    elif len(labels) == 2:
      metrics = ('accuracy', 'f1')
    else:
      metrics = ('accuracy',)
  metrics = tuple(metrics)
  return TaskSpec(name=name,
                  text_columns=tuple(text_columns),
                  labels=labels,
                  metrics=metrics,
                  selection_metric=selection_metric or metrics[0],
                  eval_splits=tuple(eval_splits))


# Metrics and selection follow the GLUE paper and the AdaMix/LoRA tables:
# CoLA Matthews correlation, STS-B Pearson (Spearman also reported), MRPC and QQP
# accuracy and F1, MNLI accuracy on matched and mismatched dev, others accuracy.
for _spec in (
    TaskSpec('cola', ('sentence',), _BINARY, ('mcc',), 'mcc'),
    TaskSpec('sst2', ('sentence',), _BINARY, ('accuracy',), 'accuracy'),
    TaskSpec('mrpc', ('sentence1', 'sentence2'), _BINARY,
             ('accuracy', 'f1', 'combined'), 'accuracy'),
    TaskSpec('qqp', ('question1', 'question2'), _BINARY,
             ('accuracy', 'f1', 'combined'), 'accuracy'),
    TaskSpec('stsb', ('sentence1', 'sentence2'), None,
             ('pearson', 'spearman', 'combined'), 'pearson'),
    TaskSpec('mnli', ('premise', 'hypothesis'),
             ('entailment', 'neutral', 'contradiction'), ('accuracy',),
             'accuracy', eval_splits=('dev_matched', 'dev_mismatched')),
    TaskSpec('qnli', ('question', 'sentence'), _NLI2, ('accuracy',), 'accuracy'),
    TaskSpec('rte', ('sentence1', 'sentence2'), _NLI2, ('accuracy',), 'accuracy'),
    # The few-shot tasks of LM-BFF (Gao et al., 2021) and LiST (Wang et al., 2021)
    # outside GLUE, read from their k-shot folders (`fewshot.py`); labels as in
    # LM-BFF's CSVs: subj 0 = subjective, 1 = objective; mpqa, mr, cr 0 = negative,
    # 1 = positive. All are scored by accuracy, as in both papers.
    TaskSpec('subj', ('sentence',), _BINARY, ('accuracy',), 'accuracy'),
    TaskSpec('mpqa', ('sentence',), _BINARY, ('accuracy',), 'accuracy'),
    TaskSpec('mr', ('sentence',), _BINARY, ('accuracy',), 'accuracy'),
    TaskSpec('cr', ('sentence',), _BINARY, ('accuracy',), 'accuracy'),
    TaskSpec('snli', ('premise', 'hypothesis'),
             ('entailment', 'neutral', 'contradiction'), ('accuracy',),
             'accuracy'),
):
  register_task(_spec)
del _spec
