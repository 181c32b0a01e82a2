"""`make quickstart`: train AdaMix on the bundled SST-2 sample, evaluate merged, export.

  python -m experiments.quickstart --workdir=workdirs/quickstart

Runs configs/quickstart.py through the same `train_and_evaluate` as experiments.main, then
reloads the export and prints a short table. Re-running with the same workdir resumes (or,
when finished, only re-evaluates).
"""

import time

from absl import flags

from adamix_jax import train
from configs import quickstart
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'workdirs/quickstart', 'Where checkpoints, logs and the export go.')


def main(argv):
  del argv
  start = time.time()
  results = train.train_and_evaluate(quickstart.get_config(), FLAGS.workdir)
  wall = time.time() - start
  p = results['parameters']
  best = results['best']['metrics']
  rows = [
      ('task / method', f"{results['task']} / {results['method']} (merged experts)"),
      ('dev accuracy (best epoch)', f"{best.get('accuracy', float('nan')):.4f}"),
      ('dev accuracy (final)', f"{results['final']['metrics'].get('accuracy', float('nan')):.4f}"),
      ('trainable parameters', f"{p['trainable']:,} ({p['trainable_pct']:.2f}% of the "
                               f"{p['backbone']:,} backbone parameters)"),
      ('adapter parameters served', f"{p['merged_trainable_backbone']:,} after merging "
                                    f"({p['trainable_backbone']:,} in training)"),
      ('training time', f"{results['train_seconds']:.0f} s"),
      ('wall time of this command', f'{wall:.0f} s'),
      ('export', results.get('export', '-')),
  ]
  width = max(len(k) for k, _ in rows)
  print()
  for k, v in rows:
    print(f'{k:<{width}}  {v}')


if __name__ == '__main__':
  cli.run(main, (train.NonFiniteLossError,))
