"""Predict with exported models; score each file too when it has labels.

  python -m experiments.predict --export=WORKDIR/export --input=test.tsv \
      --output=predictions.tsv [--label_column=label] [--text_columns=s1,s2] \
      [--batch_size=64] [--base_checkpoint=/path/to/roberta-large]
  # Several exports of one base checkpoint, one input and one output per export, predicted
  # together over one copy of the backbone (adamix_jax.serving):
  python -m experiments.predict --export=sst2/export,rte/export \
      --input=sst2.tsv,rte.tsv --output=sst2_pred.tsv,rte_pred.tsv

Writes one prediction per input row, in order (label name and class probabilities; see
`adamix_jax.predict`). For each input with the label column, prints the task's metrics as
one JSON line. An export may be named `name=DIR`. Kept short on purpose: everything else
lives in `adamix_jax.predict` and `adamix_jax.serving`.
"""

import json

from absl import app, flags

from adamix_jax import predict, serving
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_list('export', None, 'Export directories (WORKDIR/export of runs), comma '
                  'separated; each may be named NAME=DIR.')
flags.DEFINE_list('input', None, 'A .tsv, .csv or .jsonl file to predict, one per export.')
flags.DEFINE_list('output', None, 'Where to write predictions (.tsv, .csv or .jsonl), one '
                  'per export.')
flags.DEFINE_list('text_columns', None,
                  "The input's text column(s); default: those the model was trained on "
                  '(one export only).')
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
  exports = serving.named_exports(FLAGS.export)
  if not len(FLAGS.input) == len(FLAGS.output) == len(exports):
    raise app.UsageError(f'{len(exports)} export(s) need as many --input and --output '
                         f'files; got {len(FLAGS.input)} and {len(FLAGS.output)}.')
  options = dict(label_column=FLAGS.label_column or None,
                 require_labels=FLAGS['label_column'].present and bool(FLAGS.label_column),
                 input_format=FLAGS.input_format)
  if len(exports) == 1:
    predictor = predict.Predictor(next(iter(exports.values())),
                                  base_checkpoint=FLAGS.base_checkpoint,
                                  batch_size=FLAGS.batch_size, bucket_size=FLAGS.bucket_size)
    results = {predictor.task.name: predictor.predict_file(
        FLAGS.input[0], FLAGS.output[0], text_columns=FLAGS.text_columns, **options)}
  else:
    if FLAGS.text_columns:
      raise app.UsageError('--text_columns applies to one export; with several, each '
                           "input has its export's own text columns.")
    predictor = serving.MultiTaskPredictor(exports, base_checkpoint=FLAGS.base_checkpoint,
                                           batch_size=FLAGS.batch_size,
                                           bucket_size=FLAGS.bucket_size)
    results = predictor.predict_files(dict(zip(exports, FLAGS.input)),
                                      dict(zip(exports, FLAGS.output)), **options)
  for (name, result), path in zip(results.items(), FLAGS.input):
    print(f'Wrote {len(result.predictions)} predictions to {result.output_path}')
    if result.metrics is not None:
      print(json.dumps({'task': name, 'input': path,
                        'num_examples': len(result.predictions), **result.metrics}))


if __name__ == '__main__':
  cli.run(main, (serving.ServingError,))
