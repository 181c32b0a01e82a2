"""Train and evaluate one configuration.

  python -m experiments.main --config=configs/glue_sst2.py --workdir=/tmp/sst2 \
      [--config.method=lora --config.learning_rate=5e-4 ...]

This file is kept short on purpose: everything else lives in `adamix_jax`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from adamix_jax import distributed, train
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs, exports and results.')
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file (get_config()).',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  distributed.initialize_from_environment()
  logging.vlog(1, 'Config:\n%s', FLAGS.config)  # written to WORKDIR/config.json as well
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main, (train.NonFiniteLossError,))
