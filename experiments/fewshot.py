"""The few-shot protocol: tasks x methods x seeds 1-5 on the LiST splits, then the report.

  python -m experiments.fewshot --workdir=ROOT --data_dir=../shared/data/few-shot-list \
      --tasks=sst2,subj,mpqa,rte --methods=adamix,adapter,lora,full [--seeds=1,2,3,4,5] \
      [--override=model.checkpoint=/path/to/roberta-large --override=num_train_steps=500]
      [--method_override=full:learning_rate=1e-5]

Each task trains with configs/fewshot/<task>.py (LM-BFF template and label words, K = 30
examples in total, a fixed number of steps, no dev set); seed s trains on split 30-s and
is evaluated once, at the end, on the task's test file. ROOT/report/ gets the mean ± std
table (final metrics) as Markdown, CSV and a plot. Finished runs are skipped on re-runs
(runs trained with another config are refused); every split is read before anything trains.
"""

from pathlib import Path

from absl import app, flags

from adamix_jax import distributed, report, runs, sharding, sweep
from adamix_jax.data import readers
from configs.presets import parse_method_overrides, parse_value, preset_with
from experiments import cli

FLAGS = flags.FLAGS
CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'fewshot'
flags.DEFINE_string('workdir', None, 'Root of the runs: ROOT/<task>/<method>/seed_<seed>.')
ALL_TASKS = ['mnli', 'rte', 'qqp', 'sst2', 'subj', 'mpqa']
# The bundled copy has no MNLI and QQP test files (LiST's are GLUE's dev sets, > 4 MiB).
BUNDLED_TASKS = ['rte', 'sst2', 'subj', 'mpqa']
flags.DEFINE_list('tasks', None, 'Tasks with a configs/fewshot/<task>.py; default: '
                  f'{",".join(ALL_TASKS)} with --data_dir, {",".join(BUNDLED_TASKS)} without '
                  '(the bundled copy has test files for those).')
flags.DEFINE_list('methods', ['adamix', 'adapter', 'lora', 'full'], 'Methods.')
flags.DEFINE_list('seeds', ['1', '2', '3', '4', '5'], 'Seeds (= LiST split seeds).')
flags.DEFINE_string('data_dir', '', 'The LiST few-shot folder (<task>/<K>-<seed>/train.*, '
                    '<task>/test.*); empty: the bundled copy (test files cut to 100 rows).')
flags.DEFINE_multi_string('override', [], 'A config override field=value (repeatable), '
                          'e.g. model.checkpoint=/models/roberta-large.')
flags.DEFINE_multi_string('method_override', [], 'An override for one method, '
                          'method:field=value (repeatable), applied after the method preset, '
                          'e.g. full:learning_rate=5e-5; --override comes after it.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  distributed.initialize_from_environment()
  overrides = {}
  for item in FLAGS.override:
    field, sep, value = item.partition('=')
    if not sep:
      raise app.UsageError(f'--override={item!r}: expected field=value')
    overrides[field] = parse_value(value)
  if FLAGS.data_dir:
    overrides['data.data_dir'] = FLAGS.data_dir
  try:
    preset = preset_with(parse_method_overrides(FLAGS.method_override))
  except ValueError as e:
    raise app.UsageError(f'--method_override: {e}') from None
  tasks = FLAGS.tasks or (ALL_TASKS if FLAGS.data_dir else BUNDLED_TASKS)
  unknown = [t for t in tasks if not (CONFIGS / f'{t}.py').is_file()]
  if unknown:
    raise app.UsageError(f'--tasks: no configs/fewshot/{unknown[0]}.py; tasks: '
                         f'{", ".join(ALL_TASKS)}')
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise app.UsageError(f'--seeds={",".join(FLAGS.seeds)}: seeds are integers') from None
  planned = []
  try:
    for task in tasks:
      planned += sweep.plan(CONFIGS / f'{task}.py', FLAGS.workdir, tasks=[task],
                            methods=FLAGS.methods, seeds=seeds, overrides=overrides,
                            preset=preset)
  except ValueError as e:  # a field's value (ConfigError), a repeated or unknown name
    if isinstance(e, cli.USER_ERRORS):
      raise
    raise app.UsageError(str(e)) from None
  check_data(planned)
  for run in planned:
    runs.check_run(run.config, run.workdir, sharding.make_mesh(run.config).size)
  try:
    outcome = sweep.run_sweep(planned)  # refuses stale runs before training any
  except ValueError as e:
    raise cli.InputError(str(e)) from e
  paths = report.write_report(FLAGS.workdir, f'{FLAGS.workdir}/report', which='final')
  print(paths['markdown'].read_text())
  if outcome['failed']:
    raise SystemExit(f"{len(outcome['failed'])} runs failed: "
                     f"{[str(r.workdir) for r in outcome['failed']]}")


def check_data(planned) -> None:
  """Reads every (task, seed)'s train split and eval files once, before anything trains, so
  that a missing or malformed file stops the sweep instead of failing its runs one by one."""
  problems, seen = [], set()
  for run in planned:
    if (run.task, run.seed) in seen:
      continue
    seen.add((run.task, run.seed))
    try:
      data = runs.data_config(run.config)  # the split folder of the run's seed
      for split in ('train', *readers.task_from_config(data).eval_splits):
        readers.load_examples(data, split)
    except (OSError, ValueError) as e:  # DataError is a ValueError
      problems.append(f'{run.task} seed {run.seed}: {e}')
  if problems:
    raise readers.DataError('The few-shot data is missing or unreadable (nothing was '
                            'trained; pass --data_dir, or leave these tasks out of --tasks): '
                            + '; '.join(problems))


if __name__ == '__main__':
  cli.run(main)
