"""Run seeds x tasks x methods one after another: the runs behind the paper's tables.

  python -m experiments.sweep --config=configs/glue_sst2.py --workdir=ROOT \
      --seeds=1,2,3 --methods=adamix,lora --tasks=sst2,rte [--config.x=y ...]

Run (task, method, seed) trains in ROOT/<task>/<method>/seed_<seed> with
`train.train_and_evaluate`. Its config is built, in this order, from:
1. the config file: `--config`; for a task other than the config's own, the sibling file
   named for that task when it exists (`bert_base_glue_sst2.py` -> `bert_base_glue_rte.py`,
   else `glue_<task>.py`), otherwise `--config` itself (`adamix_jax.sweep.config_file_for`);
2. `configs.presets.method_preset(config, method)`;
3. the `--config.x=y` overrides of the command line (they win over the presets);
4. config.method, config.seed and config.data.task of the run.
A run whose results.json exists is skipped; an unfinished one resumes from its latest
checkpoint (train_and_evaluate does that). A failing run is logged and the sweep goes on;
the command exits non-zero at the end if any run failed.
Summarise the finished runs with `python -m experiments.report --root=ROOT`.
Kept short on purpose: the logic lives in `adamix_jax/sweep.py`.
"""

from absl import app, flags
from ml_collections import config_flags

from adamix_jax import distributed, registry, runs, sharding, sweep
from adamix_jax.data import readers
from configs.presets import method_preset
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Root: run (task, method, seed) goes to '
                    'WORKDIR/<task>/<method>/seed_<seed>.')
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file (get_config()).')
flags.DEFINE_list('seeds', ['0'], 'Seeds, e.g. 1,2,3.')
flags.DEFINE_list('methods', None, f"Methods among {', '.join(registry.NAMES)}; "
                  "default: the config's.")
flags.DEFINE_list('tasks', None, "Tasks, e.g. sst2,rte; default: the config's.")
flags.DEFINE_boolean('dry_run', False, 'Print the runs and their main settings; train '
                     'nothing.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  distributed.initialize_from_environment()
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise app.UsageError(f'--seeds={",".join(FLAGS.seeds)}: seeds are integers') from None
  try:
    planned = sweep.plan(config_flags.get_config_filename(FLAGS['config']), FLAGS.workdir,
                         tasks=FLAGS.tasks, methods=FLAGS.methods, seeds=seeds,
                         overrides=config_flags.get_override_values(FLAGS['config']),
                         preset=method_preset)
  except ValueError as e:  # a field's value (ConfigError), a repeated or unknown name
    if isinstance(e, cli.USER_ERRORS):
      raise
    raise app.UsageError(str(e)) from None
  if FLAGS.dry_run:
    for run in planned:
      c = run.config
      status, changes = sweep.status(run)
      print(f'{status}  {run.workdir}  ({run.config_file}: '
            f'lr={c.learning_rate} consistency_weight={c.consistency_weight} '
            f'experts={c.adapter.num_experts} lora_rank={c.adapter.lora_rank})' +
            changes)
    return
  check_runs(planned)
  try:
    outcome = sweep.run_sweep(planned)  # refuses stale runs before training any
  except ValueError as e:
    raise cli.InputError(str(e)) from e
  print(f"{len(planned)} runs: {len(outcome['trained'])} trained, "
        f"{len(outcome['skipped'])} skipped (finished before), "
        f"{len(outcome['failed'])} failed")
  for run in outcome['failed']:
    print(f'  failed: {run.workdir}')
  if outcome['failed']:
    raise SystemExit(1)


def check_runs(planned: list[sweep.Run]) -> None:
  """Refuses the sweep before anything trains when a run's config, workdir, checkpoint or
  data cannot work (each run alone would fail, and the sweep would go on to the next)."""
  checked_data = set()
  for run in planned:
    where = f'{run.task} / {run.method} / seed {run.seed}'
    try:
      runs.check_run(run.config, run.workdir, sharding.make_mesh(run.config).size)
      data = runs.data_config(run.config)
      key = data.to_json_best_effort()
      if key not in checked_data:
        checked_data.add(key)
        for split in ('train', *readers.task_from_config(data).eval_splits):
          readers.load_examples(data, split)
    except cli.USER_ERRORS as e:
      raise type(e)(f'{where}: {e}') from e


if __name__ == '__main__':
  cli.run(main)
