"""Predict with an exported model; score the file too when it has labels.

  python -m experiments.predict --export=WORKDIR/export --input=test.tsv \
      --output=predictions.tsv [--label_column=label] [--text_columns=s1,s2] \
      [--batch_size=64] [--base_checkpoint=/path/to/roberta-large]

Writes one prediction per input row, in order (label name and class probabilities; see
`adamix_jax.predict`). If the input has the label column, prints the task's metrics as
one JSON line. Kept short on purpose: everything else lives in `adamix_jax.predict`.
"""

import json

from absl import app, flags

from adamix_jax import predict
from adamix_jax.data.readers import DataError

FLAGS = flags.FLAGS
flags.DEFINE_string('export', None, 'An export directory (WORKDIR/export of a run).')
flags.DEFINE_string('input', None, 'A .tsv, .csv or .jsonl file to predict.')
flags.DEFINE_string('output', None, 'Where to write predictions (.tsv, .csv or .jsonl).')
flags.DEFINE_list('text_columns', None,
                  "The input's text column(s); default: those the model was trained on.")
flags.DEFINE_string('label_column', 'label',
                    'Gold label column: scored when present (required when given '
                    "explicitly); '' to never score.")
flags.DEFINE_integer('batch_size', 64, 'Rows per forward pass.')
flags.DEFINE_integer('bucket_size', 32, 'Batches are padded to a multiple of this length.')
flags.DEFINE_string('base_checkpoint', None,
                    'The base checkpoint, if not where export.json says.')
flags.DEFINE_enum('input_format', '', ['', 'tsv', 'csv', 'jsonl'],
                  "The input's format; default: from its extension.")
flags.mark_flags_as_required(['export', 'input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    predictor = predict.Predictor(FLAGS.export, base_checkpoint=FLAGS.base_checkpoint,
                                  batch_size=FLAGS.batch_size,
                                  bucket_size=FLAGS.bucket_size)
    result = predictor.predict_file(
        FLAGS.input, FLAGS.output, text_columns=FLAGS.text_columns,
        label_column=FLAGS.label_column or None,
        require_labels=FLAGS['label_column'].present and bool(FLAGS.label_column),
        input_format=FLAGS.input_format)
  except (DataError, FileNotFoundError) as e:  # bad input: the message says where
    raise SystemExit(f'error: {e}') from None
  print(f'Wrote {len(result.predictions)} predictions to {result.output_path}')
  if result.metrics is not None:
    print(json.dumps({'task': predictor.task.name, 'input': FLAGS.input,
                      'num_examples': len(result.predictions), **result.metrics}))


if __name__ == '__main__':
  app.run(main)
