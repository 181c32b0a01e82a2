"""Predict labels for a TSV/CSV/JSONL file with an exported model, and score it if labelled.

`Predictor` loads an export (`export.load_export`: base checkpoint + trained tensors) and
its tokenizer once; `Predictor.predict_file` then reads a file, runs the jitted merged model
over `pipeline.eval_batches` (every row exactly once, in file order), writes one prediction
per input row and, when the file has the label column, computes the task's metrics with
`metrics.compute_metrics`, exactly as training evaluates. Input files are read as training
reads custom files (`data.custom`); a CSV/TSV without a header line is read by the column
names the model's training files had (`data.column_names`, recorded in the export).

Output formats, chosen by the output file's extension:
- .tsv / .csv: a header, then per row `prediction` (the label name; for regression the
  score) and `prob_<label>` for every label (classification only);
- .jsonl: per row {"prediction": ..., "probabilities": {label: p, ...}}.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from adamix_jax import export, inference, prompts
from adamix_jax.data import custom, metrics as metrics_lib, pipeline
from adamix_jax.data.formats import DataError, Example
from adamix_jax.data.tasks import TaskSpec, custom_task, get_task

FORMATS = ('tsv', 'csv', 'jsonl')


@dataclasses.dataclass(frozen=True)
class PredictionResult:
  """What `Predictor.predict_file` produced.

  Attributes:
    predictions: per input row, the predicted label name (regression: the score).
    outputs: float32 [n, num_labels] class probabilities, or [n] regression scores.
    metrics: the task's metrics when the file had labels, else None.
    output_path: where the predictions were written (None if not written).
  """
  predictions: list[Any]
  outputs: np.ndarray
  metrics: dict[str, float] | None
  output_path: Path | None


def task_from_export(info: dict[str, Any]) -> TaskSpec:
  """The scoring of the exported run's task (labels, metrics, text columns)."""
  labels = None if info['labels'] is None else tuple(info['labels'])
  if info.get('task_metrics'):
    return TaskSpec(info['task'], tuple(info['text_columns']), labels,
                    tuple(info['task_metrics']), info['selection_metric'])
  # Exports written before export.json recorded the metrics.
  try:
    spec = get_task(info['task'])
    if spec.labels == labels:
      return dataclasses.replace(spec, text_columns=tuple(info['text_columns']))
  except ValueError:
    pass
  return custom_task(info['task'], info['text_columns'], labels)


def _file_format(path: Path, fmt: str) -> str:
  fmt = (fmt or path.suffix.lstrip('.')).lower()
  if fmt not in FORMATS:
    raise DataError(f'{path}: unknown format {fmt!r}; expected one of {FORMATS} (name the '
                    'file .tsv, .csv or .jsonl, or pass the format).')
  return fmt


def read_file(path: str | os.PathLike, task: TaskSpec, *,
              text_columns: Sequence[str] | None = None, label_column: str | None = 'label',
              require_labels: bool = False, fmt: str = '',
              column_names: Sequence[str] | None = None) -> tuple[list[Example], bool]:
  """Reads every row of a TSV (quoting off, as GLUE), CSV or JSONL file.

  The file is read as training reads a custom file (`custom.read_table`,
  `custom.table_examples`): a missing column, an empty text or a label outside the task's
  label set raises a `DataError` naming the file, the line and the column.

  Args:
    path: the file.
    task: gives the label set (or regression) labels are checked against.
    text_columns: the one or two text columns; None: the task's.
    label_column: the column holding gold labels; None: ignore any labels.
    require_labels: raise if the file has no `label_column`.
    fmt: 'tsv', 'csv' or 'jsonl'; '' infers it from the extension.
    column_names: the columns of a CSV/TSV without a header line (as
      `data.column_names` in training); a file whose first line names the text columns
      is read by that header instead.

  Returns:
    (the examples in file order, whether they carry gold labels). Unlabelled examples
    carry a placeholder label that nothing reads.
  """
  path = Path(path)
  fmt = _file_format(path, fmt)
  text_columns = tuple(text_columns or task.text_columns)
  if len(text_columns) != len(task.text_columns):
    raise DataError(f'{path}: the model takes {len(task.text_columns)} text column(s) '
                    f'{task.text_columns}, got {text_columns}.')
  table = custom.read_table(path, fmt)
  if (column_names and table.header is not None
      and not set(text_columns) <= set(table.header)):
    table = custom.read_table(path, fmt, column_names=column_names)
  has_labels = label_column is not None and table.has_column(label_column)
  if require_labels and not has_labels:
    raise DataError(f'{path}: no label column {label_column!r}'
                    + (f'; the header has {table.header}.' if table.header is not None else
                       ' in the first row.'))
  examples = custom.table_examples(table, task, text_columns,
                                   label_column if has_labels else None)
  if not examples:
    raise DataError(f'{path}: no rows to predict.')
  return examples, has_labels


def write_predictions(path: str | os.PathLike, outputs: np.ndarray,
                      labels: Sequence[str] | None, *, fmt: str = '') -> Path:
  """Writes one line per row of `outputs` (probabilities [n, C], or scores [n] when
  `labels` is None); the format follows the extension (see the module docstring)."""
  path = Path(path)
  fmt = _file_format(path, fmt)
  path.parent.mkdir(parents=True, exist_ok=True)
  predictions = label_names(outputs, labels)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    if fmt == 'jsonl':
      for i, prediction in enumerate(predictions):
        row = {'prediction': prediction}
        if labels is not None:
          row['probabilities'] = {l: float(p) for l, p in zip(labels, outputs[i])}
        f.write(json.dumps(row) + '\n')
      return path
    writer = csv.writer(f, delimiter='\t' if fmt == 'tsv' else ',', lineterminator='\n')
    writer.writerow(['prediction'] + ([f'prob_{l}' for l in labels] if labels else []))
    for i, prediction in enumerate(predictions):
      writer.writerow([prediction] + ([repr(float(p)) for p in outputs[i]] if labels else []))
  return path


def tokenize(info: dict[str, Any], examples: Sequence[Example],
             tokenizer: Any) -> pipeline.TokenizedDataset:
  """`examples` as the model of the export whose export.json is `info` reads them: through
  its prompt if it has one, truncated to its max length."""
  if info.get('prompt'):
    spec = prompts.PromptSpec.from_config(info['prompt'])
    return prompts.tokenize_prompt_examples(examples, spec, tokenizer, info['max_length'])
  return pipeline.tokenize_examples(examples, tokenizer, info['max_length'])


def label_names(outputs: np.ndarray, labels: Sequence[str] | None) -> list[Any]:
  """Predicted label names (the argmax of probabilities), or the regression scores."""
  if labels is None:
    return [float(x) for x in outputs]
  return [labels[i] for i in np.argmax(outputs, axis=-1)]


class Predictor:
  """An exported model, its tokenizer and its jitted forward pass, loaded once.

  The model is loaded on the first prediction, so that a bad input file fails before
  the base checkpoint is read.
  """

  def __init__(self, export_dir: str | os.PathLike, *, base_checkpoint: str | None = None,
               batch_size: int = 64, bucket_size: int = 32):
    """Args:
      export_dir: the directory `export.export_run` wrote (WORKDIR/export).
      base_checkpoint: where the base checkpoint lives now, if not where the export says.
      batch_size: rows per forward pass, split over the local devices.
      bucket_size: batches are padded to a multiple of this many tokens.
    """
    self.mesh = Mesh(np.asarray(jax.local_devices()), ('data',))
    if batch_size <= 0 or batch_size % self.mesh.size:
      raise ValueError(f'batch_size={batch_size} must be a positive multiple of the '
                       f'{self.mesh.size} local devices.')
    self.export_dir, self.base_checkpoint = Path(export_dir), base_checkpoint
    self.batch_size, self.bucket_size = batch_size, bucket_size
    self.info = export.read_info(export_dir)
    self.task = task_from_export(self.info)

  @functools.cached_property
  def _loaded(self) -> tuple[Any, Any, Any]:
    """(tokenizer, replicated params, jitted forward)."""
    from adamix_jax import hf_checkpoint  # pylint: disable=import-outside-toplevel
    model, params, _ = export.load_export(self.export_dir,
                                          base_checkpoint=self.base_checkpoint)
    tokenizer = pipeline.load_tokenizer(hf_checkpoint.resolve_model_dir(
        self.base_checkpoint or self.info['base_checkpoint']))
    params = jax.device_put(params, NamedSharding(self.mesh, P()))
    # The export holds the merged adapter, so 'merged' runs a plain (non-mixture) model.
    forward = jax.jit(functools.partial(inference.predict, model, mode='merged',
                                        regression=self.task.is_regression))
    return tokenizer, params, forward

  def predict(self, examples: Sequence[Example]) -> np.ndarray:
    """Probabilities [n, C] (regression: scores [n]) for `examples`, in their order."""
    tokenizer, params, forward = self._loaded
    dataset = tokenize(self.info, examples, tokenizer)
    outputs = []
    for batch in pipeline.eval_batches(dataset, self.batch_size, bucket_size=self.bucket_size,
                                       process_index=0, process_count=1):
      keep = batch.pop('weights') > 0  # padding rows of the last batch
      del batch['labels']
      outputs.append(np.asarray(self.forward(batch))[keep])
    outputs = np.concatenate(outputs)
    assert len(outputs) == len(examples), (len(outputs), len(examples))
    return outputs

  def forward(self, batch: dict[str, np.ndarray]) -> jax.Array:
    """The jitted forward pass on one tokenized batch (input_ids, attention_mask,
    token_type_ids, mask_positions) of `batch_size` rows; the outputs stay on the device."""
    _, params, forward = self._loaded
    return forward(params, pipeline.shard_batch(batch, self.mesh))

  def memory_bytes(self) -> int:
    """Bytes of the parameters held on the device (the full model)."""
    return sum(x.nbytes for x in jax.tree_util.tree_leaves(self._loaded[1]))

  def evaluate(self, outputs: np.ndarray, examples: Sequence[Example]) -> dict[str, float]:
    """The task's metrics of `outputs` against the examples' gold labels."""
    gold = np.asarray([e.label for e in examples])
    predictions = outputs if self.task.is_regression else outputs.argmax(-1)
    return metrics_lib.compute_metrics(self.task, predictions, gold)

  def predict_file(self, input_path: str | os.PathLike,
                   output_path: str | os.PathLike | None = None, *,
                   text_columns: Sequence[str] | None = None,
                   label_column: str | None = 'label', require_labels: bool = False,
                   input_format: str = '', output_format: str = '',
                   column_names: Sequence[str] | None = None) -> PredictionResult:
    """Predicts every row of `input_path`, writes `output_path`, scores labelled files.

    Args:
      input_path: a .tsv, .csv or .jsonl file (or name the format in `input_format`).
      output_path: where to write the predictions; None: do not write.
      text_columns: the text columns; None: those the model was trained on.
      label_column: the gold label column; evaluated if the file has it.
      require_labels: fail if the file has no `label_column`.
      column_names: the columns of a headerless CSV/TSV (see `read_file`); None: those
        the model's training files had (`data.column_names`, recorded in the export).
    """
    if column_names is None:
      column_names = (self.info.get('file_layout') or {}).get('column_names')
    examples, has_labels = read_file(input_path, self.task, text_columns=text_columns,
                                     label_column=label_column,
                                     require_labels=require_labels, fmt=input_format,
                                     column_names=column_names)
    outputs = self.predict(examples)
    written = None
    if output_path is not None:
      written = write_predictions(output_path, outputs, self.task.labels, fmt=output_format)
    return PredictionResult(
        predictions=label_names(outputs, self.task.labels), outputs=outputs,
        metrics=self.evaluate(outputs, examples) if has_labels else None,
        output_path=written)
