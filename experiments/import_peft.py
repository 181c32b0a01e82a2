"""Import a PEFT LoRA adapter as an adamix-jax export, to evaluate it with the harness.

  python -m experiments.import_peft --adapter=PEFT_DIR --out=EXPORT_DIR --task=sst2 \
      [--base_checkpoint=/path/to/base] [--max_length=128]
  python -m experiments.predict --export=EXPORT_DIR --input=dev.tsv --output=pred.tsv

`--task` is a registered task (its labels must match the adapter's head), or give
`--labels=neg,pos --text_columns=sentence` for your own. To continue training the adapter
(plain LoRA or as AdaMix-LoRA experts) use `adamix_jax.interop.peft_io.overlay_peft`.
"""

from absl import app, flags

from adamix_jax.data.tasks import custom_task, get_task
from adamix_jax.interop import peft_io
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('adapter', None, 'A PEFT LoRA adapter directory.')
flags.DEFINE_string('out', None, 'The export directory to write.')
flags.DEFINE_string('task', None, 'A registered task name, or a name for --labels.')
flags.DEFINE_list('labels', None, 'Class names in head order (custom task; [] regression).')
flags.DEFINE_list('text_columns', ['sentence'], 'Text column(s) of a custom task.')
flags.DEFINE_string('base_checkpoint', None,
                    "The base model, if not the adapter's base_model_name_or_path.")
flags.DEFINE_integer('max_length', 128, 'Tokenizer truncation length for prediction.')
flags.mark_flags_as_required(['adapter', 'out', 'task'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    task = (get_task(FLAGS.task) if FLAGS.labels is None else
            custom_task(FLAGS.task, FLAGS.text_columns, FLAGS.labels or None))
  except ValueError as e:  # an unknown task name or label set
    raise app.UsageError(f'--task={FLAGS.task}: {e}') from e
  out = peft_io.import_to_export(FLAGS.adapter, FLAGS.out, task=task,
                                 base_checkpoint=FLAGS.base_checkpoint,
                                 max_length=FLAGS.max_length)
  print(f'Wrote adamix-jax export of {FLAGS.adapter} to {out}')


if __name__ == '__main__':
  cli.run(main)
