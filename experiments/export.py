"""Export a trained run for the PyTorch ecosystem.

  python -m experiments.export --workdir=RUN_DIR --format=peft --out=DIR
  python -m experiments.export --export=RUN_DIR/export --format=hf --out=DIR \
      [--base_checkpoint=/path/to/base]

Formats: `peft` (a PEFT LoRA adapter: lora / adamix_lora runs), `hf` (a transformers
*ForSequenceClassification checkpoint, LoRA folded in: lora, adamix_lora, bitfit, full,
head_only), `adapters` (bottleneck adapters for `adamix_jax.interop.torch_adapters`:
adapter, adamix). The run's export (written at the end of training, experts already
merged) is the input. Kept short on purpose: the work is in `adamix_jax.interop`.
"""

from pathlib import Path

from absl import app, flags

from adamix_jax import interop
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A training run directory (its export/ is read).')
flags.DEFINE_string('export', None, 'An export directory (instead of --workdir).')
flags.DEFINE_enum('format', None, list(interop.FORMATS), 'What to write.')
flags.DEFINE_string('out', None, 'The directory to write.')
flags.DEFINE_string('base_checkpoint', None,
                    'The base checkpoint, if not where export.json says.')
flags.mark_flags_as_required(['format', 'out'])
flags.mark_flags_as_mutual_exclusive(['workdir', 'export'], required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  source = Path(FLAGS.export) if FLAGS.export else Path(FLAGS.workdir) / 'export'
  try:
    out = interop.convert_export(source, FLAGS.out, FLAGS.format,
                                 base_checkpoint=FLAGS.base_checkpoint)
  except ValueError as e:  # a bad export.json or tensor file, a base checkpoint that does
    # not fit: each names the file
    if isinstance(e, cli.USER_ERRORS):
      raise
    raise interop.InteropError(str(e)) from e
  print(f'Wrote {FLAGS.format} export of {source} to {out}')


if __name__ == '__main__':
  cli.run(main)
