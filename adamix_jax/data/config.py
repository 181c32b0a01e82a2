"""The `config.data` block: which data to read and how to batch it."""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict


def default_data_config() -> ml_collections.ConfigDict:
  """Defaults: SST-2 from the bundled GLUE sample, so tests and the quickstart run
  offline. Task configs override `task` and usually `data_dir`."""
  data = ml_collections.ConfigDict()
  # Task name: a GLUE task ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', 'qnli',
  # 'rte'; case, '-' and '_' ignored), a few-shot task ('subj', 'mpqa', 'mr', 'cr',
  # 'snli') or, with source='custom', any new name.
  data.task = 'sst2'
  # 'glue_tsv' (glue_data/<TASK>/{train,dev}.tsv), 'tfds' (tensorflow-datasets
  # glue/<task>, needs TensorFlow), 'custom' (your own CSV/TSV/JSONL files), or
  # few-shot data: 'fewshot_list' (LiST's splits, the AdaMix paper's:
  # <TASK>/<K>-<seed>/train + <TASK>/test, K in total, eval split 'test'), 'lmbff'
  # (LM-BFF's k-shot: <TASK>/<K>-<seed>/{train,dev,test}, K per class, eval splits
  # 'dev' then 'test'), 'sample' (K examples drawn from the training set that
  # `sample_source` reads; eval splits as that source's). Each is one record in
  # adamix_jax/data/sources.py, read by its module (glue.py, tfds_glue.py, custom.py,
  # fewshot_list.py, lmbff.py, sample.py).
  data.source = 'glue_tsv'
  # glue_tsv: the directory holding <TASK>/ folders ('' = the small sample bundled
  # in adamix_jax/data/samples/glue); tfds: the TFDS data dir ('' = tfds default);
  # fewshot_list / lmbff: the folder holding <TASK>/ folders (fewshot_list: '' =
  # the bundled K=30 LiST sample, whose test files are 100-row cuts).
  data.data_dir = ''
  # fewshot_list / lmbff: K of the <K>-<seed> folder (LiST 10/20/30 examples in
  # total; LM-BFF 16 per class). sample: examples to draw (see fewshot_per_class).
  data.fewshot_k = 0
  # fewshot_list / lmbff: seed of the <K>-<seed> folder (LiST 1-5; LM-BFF 13, 21,
  # 42, 87, 100). sample: the numpy seed of the draw. 0 = the run's seed (config.seed)
  # when training, so a sweep over seeds walks over the splits.
  data.fewshot_seed = 0
  # sample only: draw fewshot_k examples of every class (LM-BFF's K) instead of
  # fewshot_k in total (LiST's and the AdaMix paper's K).
  data.fewshot_per_class = False
  # sample only: the source the full training (and eval) data comes from:
  # 'glue_tsv', 'tfds' or 'custom', configured by the fields above and below.
  data.sample_source = 'glue_tsv'
  # tfds only: allow downloading and preparing the data. Off so that nothing waits
  # on the network; prepare once with `tfds build glue/<task>`.
  data.download = False
  # custom only: the training file.
  data.train_file = ''
  # custom only: eval files as 'path' (split named after the file stem) or
  # 'name=path' entries, e.g. ('dev=/data/dev.jsonl', '/data/test.jsonl'); the
  # first split is the model-selection split.
  data.eval_files = ()
  # custom only: 'csv' (quoting on), 'tsv' (quoting off, as GLUE) or 'jsonl';
  # '' infers it from the file extension.
  data.format = ''
  # custom only: column names of a CSV/TSV without a header line, in file order
  # (e.g. ('sentence', 'label') for the LiST few-shot SST-2 files); () = the
  # first line is the header. Kept in the export: prediction reads such files too.
  data.column_names = ()
  # custom only: the one or two text columns; () = the registered task's names.
  data.text_columns = ()
  # custom only: the column holding the label (class name or number).
  data.label_column = 'label'
  # custom task only: class names in label-index order, as a tuple (on the command
  # line: --config.data.labels="('neg', 'pos')"). For a registered task name leave
  # it unset (its own label set is used).
  data.labels = config_dict.placeholder(tuple)
  # custom task only: a numeric score to regress instead of classes (no labels).
  data.regression = False
  # custom task only: metrics to report and the one selecting checkpoints;
  # () / '' = accuracy (+F1 for two classes), or Pearson+Spearman for regression.
  data.metrics = ()
  data.selection_metric = ''
  # Count, log and drop malformed rows instead of failing on the first one.
  data.skip_bad_rows = False
  # Keep only the first N training examples (0 = all); eval sets are never cut.
  data.max_train_examples = 0
  # Tokens per example after truncation (pairs truncate the longer text first).
  data.max_length = 128
  # Batches are padded to a multiple of this (<= max_length) to bound the number
  # of shapes jit compiles.
  data.bucket_size = 32
  # Pad every batch to max_length instead (one compiled shape).
  data.pad_to_max = False
  return data


def field(data_cfg: Any, name: str, default: Any = None) -> Any:
  """`data_cfg.<name>`, or `default` when the config lacks the field or holds None there.

  Any object with the fields as attributes serves as a data config."""
  value = getattr(data_cfg, name, default)
  return default if value is None and default is not None else value
