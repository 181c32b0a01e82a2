"""The results table of a sweep: methods x tasks, mean ± std over seeds, parameters.

  python -m experiments.report --root=ROOT [--out=ROOT/report] [--which=best|final]

Reads every results.json under ROOT and writes OUT/results.md, OUT/results.csv and
OUT/results.png (Avg. score against trainable parameters); prints the Markdown table.
Conventions (headline metrics, sample std, Avg.): `adamix_jax/report.py`.
"""

from absl import app, flags

from adamix_jax import report
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('root', None, 'Directory searched recursively for results.json files.')
flags.DEFINE_string('out', None, 'Output directory; default: ROOT/report.')
flags.DEFINE_enum('which', 'best', list(report.WHICH),
                  "'best': each run's best evaluation (the paper's protocol); 'final': its "
                  'last.')
flags.mark_flags_as_required(['root'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    paths = report.write_report(FLAGS.root, FLAGS.out or f'{FLAGS.root}/report', FLAGS.which)
  except ValueError as e:  # a malformed results.json: the message names the file
    raise cli.InputError(str(e)) from e
  print(paths['markdown'].read_text())
  print('\n'.join(f'Wrote {p}' for p in paths.values()))


if __name__ == '__main__':
  cli.run(main)
