"""Source 'tfds': tensorflow-datasets' glue/<task> (needs TensorFlow; never downloads
unless data.download=True)."""

from __future__ import annotations

import importlib.util
from typing import Any

from adamix_jax.data.config import field
from adamix_jax.data.formats import DataError, Example, RowParser
from adamix_jax.data.tasks import TaskSpec, get_task

# tfds split names for ours, and tfds' own class names (checked, so that a tfds
# release that reorders classes cannot silently flip labels).
_TFDS_SPLITS = {'train': 'train', 'dev': 'validation',
                'dev_matched': 'validation_matched',
                'dev_mismatched': 'validation_mismatched'}
_TFDS_LABEL_NAMES = {
    'cola': ('unacceptable', 'acceptable'),
    'sst2': ('negative', 'positive'),
    'mrpc': ('not_equivalent', 'equivalent'),
    'qqp': ('not_duplicate', 'duplicate'),
    'mnli': ('entailment', 'neutral', 'contradiction'),
    'qnli': ('entailment', 'not_entailment'),
    'rte': ('entailment', 'not_entailment'),
}


def read_tfds(task: TaskSpec | str, split: str, data_dir: str | None = None,
              download: bool = False, *,
              skip_bad_rows: bool = False) -> list[Example]:
  """Reads tensorflow-datasets' `glue/<task>` (needs TensorFlow).

  Args:
    task: a registered GLUE task (or its name).
    split: 'train', 'dev', 'dev_matched' or 'dev_mismatched'.
    data_dir: the TFDS data directory; None uses TFDS' default
      (~/tensorflow_datasets or $TFDS_DATA_DIR).
    download: allow downloading and preparing the data if it is not prepared.
      Off by default so that nothing ever waits on the network.
    skip_bad_rows: count and log bad rows instead of raising on the first.

  Returns:
    The split's examples in tfds index order.
  """
  task = get_task(task) if isinstance(task, str) else task
  name = f'glue/{task.name}'
  if split not in _TFDS_SPLITS:
    raise ValueError(f'Unknown split {split!r}; expected one of '
                     f'{list(_TFDS_SPLITS)}.')
  if importlib.util.find_spec('tensorflow') is None or importlib.util.find_spec(
      'tensorflow_datasets') is None:
    raise ImportError(f'Reading {name} needs tensorflow and tensorflow-datasets; '
                      'install them or use source="glue_tsv".')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for unknown names
    raise ValueError(f'tensorflow-datasets has no dataset {name!r}: {e}') from e
  if not builder.is_prepared():
    if not download:
      raise DataError(
          f'{builder.data_dir}: TFDS dataset {name} is not prepared (download='
          f'False, so nothing was fetched). Prepare it once on a machine with '
          f'network access: `tfds build {name} --data_dir='
          f'{data_dir or "~/tensorflow_datasets"}` or `python -c "import '
          f'tensorflow_datasets as tfds; tfds.builder(\'{name}\', data_dir='
          f'{data_dir!r}).download_and_prepare()"`, or set data.download=True.')
    builder.download_and_prepare()
  if task.labels is not None:
    names = tuple(builder.info.features['label'].names)
    if names != _TFDS_LABEL_NAMES.get(task.name):
      raise DataError(f'{builder.data_dir}: {name} labels are {names}, '
                      f'expected {_TFDS_LABEL_NAMES.get(task.name)} (tfds '
                      'changed its class order?).')
  tfds_split = _TFDS_SPLITS[split]
  if tfds_split not in builder.info.splits:
    raise DataError(f'{builder.data_dir}: {name} has no split {tfds_split!r}; '
                    f'it has {list(builder.info.splits)}.')
  rows = sorted(tfds.as_numpy(builder.as_dataset(split=tfds_split,
                                                 shuffle_files=False)),
                key=lambda row: int(row['idx']))

  def records():
    for row in rows:
      record = {c: row[c].decode('utf-8') for c in task.text_columns}
      label = row['label']
      if task.labels is not None:
        # tfds stores -1 for unlabelled (test) rows; map ints to our names.
        label = (task.labels[label] if 0 <= label < len(task.labels)
                 else int(label))
      record['label'] = label if task.labels is not None else float(label)
      yield int(row['idx']), record

  parser = RowParser(task, task.text_columns, 'label', skip_bad_rows,
                     f'tfds {name} [{tfds_split}] idx')
  return parser.parse(records())


def task(data_cfg: Any) -> TaskSpec:
  """The registered task `data.task` names."""
  return get_task(field(data_cfg, 'task', ''))


def read(data_cfg: Any, spec: TaskSpec, split: str) -> tuple[list[Example], str]:
  """One split of glue/<task> from `data.data_dir` ('' = tfds' default); returns also a
  description of where it came from."""
  data_dir = field(data_cfg, 'data_dir', '')
  examples = read_tfds(spec, split, data_dir=data_dir or None,
                       download=bool(field(data_cfg, 'download', False)),
                       skip_bad_rows=bool(field(data_cfg, 'skip_bad_rows', False)))
  return examples, f'tfds glue/{spec.name} (data_dir={data_dir or "default"})'
