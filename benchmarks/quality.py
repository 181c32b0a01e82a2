"""Dev-set quality of every method with MiniLM-L6 on real GLUE data, over seeds.

  python -m benchmarks.quality [--root=benchmarks/workdirs/quality]
      [--tasks=sst2,rte,mrpc] [--methods=adamix,adapter,lora,bitfit,full,head_only]
      [--seeds=1,2,3] [--sst2_steps=600] [--epochs=3] [--steps=N] [--max_length=128]
      [--set=learning_rate=5e-4,...] [--dry_run] [--report_only]

Trains with the sweep machinery (`adamix_jax.sweep.plan` + `run_sweep`) from
`benchmarks/quality_config.py`, one plan per task for the task's budget: SST-2 a fixed
number of steps (`--sst2_steps`, evaluated every `--sst2_eval_every` steps on the full dev
set), RTE and MRPC `--epochs` epochs over the full training set (evaluated every epoch).
`--steps=N` replaces every task's budget by N steps with one evaluation at the end (a
reduced budget; N ≤ 10 is labelled a smoke test). Runs go to ROOT/<task>/<method>/seed_<seed>.

AdaMix is reported twice from the same trained runs: merged (how it is trained to be
served, `eval_mode='merged'`) and with random routing (`adamix [random]`): after training,
the best and the final checkpoint of each AdaMix run are evaluated again by
`evaluation.evaluate` with `eval_mode='random'`, written to ROOT/<task>/adamix_random/seed_<seed>
/results.json, which `adamix_jax.report` shows as its own row.

Resumable: a finished run (results.json) is skipped, an unfinished one resumes from its
last checkpoint, a done random-routing evaluation is skipped. ROOT/quality_plan.json
records the budget; a re-run with another budget into the same root is refused.

The table (`adamix_jax.report`: dev metric ×100, mean ± sample std over seeds, trainable
parameters), the train times and the dev curves go to ROOT/report/ and, with --write, into
the section `--section` of benchmarks/notes/quality.md, with two figures in
benchmarks/figures/ (score against trainable parameters; dev curves) and the numbers behind
them (every run's results.json and dev curve) in benchmarks/results/<section>.json, so that
the tables and figures outlive the runs' folders.

Cost of the defaults on 2 CPU cores (MiniLM, batch 32; step times of benchmarks/speed.py
on an unloaded machine, summed over the six default methods: 4.9 s at length 64, 12.3 s
at 128; SST-2 batches are padded to 64, RTE to 128, MRPC mostly to 96): per seed about
50 min for SST-2 (600 steps), 47 min for RTE and 48 min for MRPC (3 epochs each), i.e.
about 7.5 hours for 3 seeds, more on a loaded machine. AdaMix (two routed passes) is 27%
of it. RTE at 3 epochs is far from the paper's 20-50 epochs: scores are low and noisy.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from absl import app, flags, logging
import ml_collections

from adamix_jax import (checkpoints, evaluation, methods, optim, registry, report, runs, sweep,
                        train)
from adamix_jax.data import readers
from benchmarks import common
from experiments import cli
from configs import presets

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = Path(__file__).resolve().parent / 'quality_config.py'
TASKS = ('sst2', 'rte', 'mrpc')
RANDOM_DIR = 'adamix_random'

FLAGS = flags.FLAGS
flags.DEFINE_string('root', 'benchmarks/workdirs/quality', 'Sweep root (runs, report).')
flags.DEFINE_string('data_dir', str(ROOT.parent / 'shared' / 'data' / 'glue'),
                    'GLUE TSVs in glue_data/<TASK>/ layout (default: ../shared/data/glue '
                    'from the project root).')
flags.DEFINE_list('tasks', list(TASKS), 'Tasks among sst2, rte, mrpc.')
flags.DEFINE_list('methods', ['adamix', 'adapter', 'lora', 'bitfit', 'full', 'head_only'],
                  f'Methods among {", ".join(registry.NAMES)}.')
flags.DEFINE_list('seeds', ['1', '2', '3'], 'Seeds.')
flags.DEFINE_integer('sst2_steps', 600, 'SST-2 training steps (batch 32; an epoch is '
                     '2,105 steps).')
flags.DEFINE_integer('sst2_eval_every', 200, 'SST-2: evaluate on the full dev set every '
                     'this many steps (and at the end).')
flags.DEFINE_integer('epochs', 3, 'RTE and MRPC: epochs over the full training set.')
flags.DEFINE_integer('steps', -1, 'If > 0: every task trains exactly this many steps, '
                     'evaluated once at the end (replaces --sst2_steps / --epochs); up to '
                     '10 the table is labelled a smoke test.')
flags.DEFINE_integer('max_length', 128, 'Tokens per example after truncation.')
flags.DEFINE_list('set', [], 'Extra config overrides, dotted=value (e.g. '
                  'learning_rate=5e-4), applied to every run after the method preset.')
flags.DEFINE_list('method_set', [], 'Overrides for one method, method:dotted=value (e.g. '
                  'full:learning_rate=5e-5), applied right after the method preset (--set comes after).')
flags.DEFINE_boolean('random_eval', True, 'Evaluate AdaMix runs again with random routing.')
flags.DEFINE_enum('which', 'best', list(report.WHICH), "Table of each run's best or final "
                  'evaluation.')
flags.DEFINE_boolean('run_curves', False, 'Also a dev-curve row for every run (method, '
                     'seed), not only the mean over seeds.')
flags.DEFINE_boolean('dry_run', False, 'Print the runs; train nothing.')
flags.DEFINE_boolean('report_only', False, 'Only rebuild the table from finished runs.')
flags.DEFINE_boolean('write', True, 'Write the section into benchmarks/notes/quality.md, its '
                     'figures into benchmarks/figures/ and its numbers into benchmarks/results/.')
flags.DEFINE_string('restore', '', 'A numbers file this benchmark saved (benchmarks/results/'
                    '<section>.json): its runs are written back into --root (results.json and '
                    'the dev curve of each run the root lacks), so that new seeds or methods '
                    'run beside them and the tables cover all.')
flags.DEFINE_string('section', 'quality', 'The section written (another name, e.g. '
                    'quality/mrpc-3-epochs, keeps a run with another budget or subset beside '
                    'the main table).')


def check_data(data_dir: Path, tasks: list[str]) -> None:
  missing = []
  for task in tasks:
    folder = data_dir / readers.GLUE_LAYOUTS[task].dirname
    missing += [str(folder / f) for f in ('train.tsv', 'dev.tsv')
                if not (folder / f).is_file()]
  if missing:
    raise app.UsageError(
        'The quality benchmark reads the real GLUE files and some are missing:\n  ' +
        '\n  '.join(missing) + '\nPoint --data_dir at a glue_data/ folder (default '
        '../shared/data/glue beside the project root).')


def budget() -> dict[str, Any]:
  """What decides the runs' results besides task, method and seed."""
  user = {}
  for item in FLAGS.set:
    if '=' not in item:
      raise app.UsageError(f'--set expects dotted=value, got {item!r}')
    key, value = item.split('=', 1)
    user[key.strip()] = presets.parse_value(value.strip())
  try:
    per_method = presets.parse_method_overrides(FLAGS.method_set)
  except ValueError as e:
    raise app.UsageError(f'--method_set: {e}') from None
  return {'steps': FLAGS.steps, 'sst2_steps': FLAGS.sst2_steps,
          'sst2_eval_every': FLAGS.sst2_eval_every, 'epochs': FLAGS.epochs,
          'max_length': FLAGS.max_length, 'set': user, 'method_set': per_method}


def plan_preset(plan: dict[str, Any]):
  """`method_preset`, then the plan's per-method overrides (--method_set)."""
  return presets.preset_with(plan.get('method_set', {}))


def task_overrides(task: str, plan: dict[str, Any], data_dir: Path) -> dict[str, Any]:
  overrides = {'data.data_dir': str(data_dir), 'data.max_length': plan['max_length']}
  if plan['steps'] > 0:
    overrides.update(num_train_steps=plan['steps'], eval_every_steps=plan['steps'])
  elif task == 'sst2':
    overrides.update(num_train_steps=plan['sst2_steps'],
                     eval_every_steps=plan['sst2_eval_every'])
  else:
    overrides.update(num_train_steps=-1, num_epochs=plan['epochs'], eval_every_steps=0)
  overrides.update(plan['set'])
  return overrides


def check_plan(root: Path, plan: dict[str, Any]) -> None:
  """Refuses to mix budgets in one root (finished runs would be skipped, not redone)."""
  path = root / 'quality_plan.json'
  if path.exists():
    saved = json.loads(path.read_text())
    if saved != plan:
      raise app.UsageError(f'{root} holds runs of another budget {saved}; this one is {plan}. '
                           'Use another --root (or the same flags).')
  else:
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=2))


# --------------------------------------------------------------------------------------
# AdaMix with random routing, evaluated from the trained runs' checkpoints.
# --------------------------------------------------------------------------------------


def random_routing_eval(run: sweep.Run) -> Path | None:
  """Evaluates the best and final checkpoints of a finished AdaMix run with random routing
  (`evaluation.evaluate`, eval_mode='random'); writes ROOT/<task>/adamix_random/seed_<s>/
  results.json in the trained run's format. Returns its path (None if already done)."""
  out_dir = run.workdir.parent.parent / RANDOM_DIR / run.workdir.name
  out = out_dir / 'results.json'
  if out.exists():
    return None
  trained = json.loads((run.workdir / 'results.json').read_text())
  config = ml_collections.ConfigDict(run.config.to_dict())
  config.eval_mode = 'random'
  built, trainable = runs.build_run(config, out_dir)
  tx, _ = optim.make_optimizer(config, 1, built.adaptation, trainable)
  abstract = train.abstract_state(train.create_train_state(trainable, tx))
  evaluated = {}
  for which, folder, keep in (('best', 'best', 1),
                              ('final', 'checkpoints', config.max_checkpoints_to_keep)):
    manager = checkpoints.checkpoint_manager(run.workdir / folder, keep, asynchronous=False)
    state, _, _ = checkpoints.restore(manager, abstract)
    step = int(state.step)
    evaluated[which] = {'step': step, 'metrics': evaluation.evaluate(
        built, methods.combine(state.params, built.frozen), step=step)}
  results = {**trained, 'eval_mode': 'random', **evaluated,
             'evaluated_from': str(run.workdir)}
  out_dir.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=2))
  return out


# --------------------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------------------


def trained_runs(root: Path):
  """(folder, results.json) of every trained run under `root`; the random-routing rows,
  which re-evaluate trained runs' checkpoints, are not among them."""
  for path in sorted(root.rglob('results.json')):
    data = json.loads(path.read_text())
    if data.get('eval_mode', 'merged') == 'merged':
      yield path.parent, data


def train_time_table(root: Path) -> str:
  """Mean train seconds and seconds per step of each (task, method) over its seeds."""
  groups: dict[tuple[str, str], list[dict]] = {}
  for _, data in trained_runs(root):
    groups.setdefault((data['task'], data['method']), []).append(data)
  rows = []
  for task in report.order({t for t, _ in groups}, report.TASK_ORDER):
    for method in report.order({m for t, m in groups if t == task}, report.METHOD_ORDER):
      runs = groups[task, method]
      seconds = [r['train_seconds'] for r in runs]
      steps = runs[0]['final']['step']
      p = runs[0]['parameters']
      rows.append([report.TASK_TITLES.get(task, task), method, len(runs), steps,
                   f"{p['trainable']:,}", f'{statistics.fmean(seconds) / 60:.1f}',
                   f'{statistics.fmean(seconds) / steps:.2f}'])
  return common.markdown_table(
      ['task', 'method', 'seeds', 'steps', 'trainable (with head)', 'train min (mean)',
       's / step (incl. evals)'], rows)


def dev_curves(root: Path) -> dict[str, dict[str, dict[int, list[float]]]]:
  """task -> method -> evaluation step -> the selection metric of each seed at that step,
  read from the trained runs' metrics.jsonl (`eval/<metric>` lines)."""
  curves: dict[str, dict[str, dict[int, list[float]]]] = {}
  for folder, data in trained_runs(root):
    per_step = curves.setdefault(data['task'], {}).setdefault(data['method'], {})
    for step, value in run_curve(folder, data).items():
      per_step.setdefault(step, []).append(value)
  return curves


def run_curve(folder: Path, data: dict[str, Any]) -> dict[int, float]:
  """Evaluation step -> the run's selection metric, from its metrics.jsonl (empty when the
  run has none)."""
  log = folder / 'metrics.jsonl'
  if not log.exists():
    return {}
  key = f"eval/{data['selection_metric']}"
  curve = {}
  for number, line in enumerate(log.read_text().splitlines(), 1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f'{log}:{number}: not a JSON line ({e})') from None
    if key in record:
      curve[int(record['step'])] = float(record[key])
  return curve


def dev_curve_tables(root: Path) -> str:
  """One table per task evaluated more than once: the dev selection metric ×100 at every
  evaluation step, mean ± sample std over the seeds evaluated at that step (whether a
  method is still improving where its budget ends)."""
  out = []
  curves = dev_curves(root)
  for task in report.order(curves, report.TASK_ORDER):
    names = report.order(curves[task], report.METHOD_ORDER)
    steps = sorted({s for m in names for s in curves[task][m]})
    if len(steps) < 2:
      continue  # one evaluation: the results table already has it
    rows = []
    for method in names:
      per_step = curves[task][method]
      cells = [report.score(*report.mean_std([100 * v for v in per_step[step]]))
               if per_step.get(step) else '-' for step in steps]
      rows.append([method, max(len(v) for v in per_step.values()), *cells])
    out.append(f"Dev curve, {report.TASK_TITLES.get(task, task)} (selection metric ×100 at "
               'each evaluation step; mean ± std over seeds):\n\n' +
               common.markdown_table(['method', 'seeds', *map(str, steps)], rows))
  return '\n'.join(out)


def seed_scores(root: Path, which: str = 'best') -> dict[tuple[str, str], dict[int, float]]:
  """(task, method) -> seed -> the selection metric ×100 of the run's best (or final)
  evaluation; the random-routing re-evaluations as method `adamix [random]`."""
  scores: dict[tuple[str, str], dict[int, float]] = {}
  for path in sorted(root.rglob('results.json')):
    data = json.loads(path.read_text())
    method = data['method'] + (' [random]' if data.get('eval_mode') == 'random' else '')
    value = data[which]['metrics'].get(data['selection_metric'])
    if value is not None:
      scores.setdefault((data['task'], method), {})[int(data['seed'])] = 100 * value
  return scores


def paired_tables(root: Path, which: str = 'best', baseline: str = 'adapter') -> str:
  """Per task: each seed's score of `baseline` and of every mixture row trained with the
  same seed, the paired differences (mixture − baseline) and their mean ± sample std."""
  scores = seed_scores(root, which)
  out = []
  for task in report.order({t for t, _ in scores}, report.TASK_ORDER):
    base = scores.get((task, baseline), {})
    others = [m for m in report.order({m for t, m in scores if t == task} - {baseline},
                                      report.METHOD_ORDER + ('adamix [random]',))
              if set(scores[task, m]) & set(base)]
    if not base or not others:
      continue
    seeds = sorted(set(base).intersection(*(scores[task, m] for m in others)))
    rows, diffs = [], {m: [] for m in others}
    for seed in seeds:
      cells = [f'{base[seed]:.1f}']
      for m in others:
        d = scores[task, m][seed] - base[seed]
        diffs[m].append(d)
        cells += [f'{scores[task, m][seed]:.1f}', f'{d:+.1f}']
      rows.append([seed, *cells])
    summary = ['mean ± std', '']
    for m in others:
      mean, std = report.mean_std(diffs[m])
      summary += ['', f'{mean:+.1f}' + (f' ± {std:.1f}' if std is not None else '')]
    header = ['seed', baseline] + [c for m in others for c in (m, f'{m} − {baseline}')]
    out.append(f"Paired by seed, {report.TASK_TITLES.get(task, task)} (selection metric ×100, "
               f"{which} evaluation):\n\n" +
               common.markdown_table(header, rows + [summary]))
  return '\n'.join(out)


def run_curve_tables(root: Path) -> str:
  """Per task evaluated more than once: one row per run (method, seed) with the dev
  selection metric ×100 at every evaluation."""
  out = []
  for task in report.order({d['task'] for _, d in trained_runs(root)}, report.TASK_ORDER):
    rows, steps = [], set()
    per_run = {}
    for folder, data in trained_runs(root):
      if data['task'] == task:
        curve = per_run[data['method'], int(data['seed'])] = run_curve(folder, data)
        steps |= set(curve)
    if len(steps) < 2:
      continue
    steps = sorted(steps)
    for method in report.order({m for m, _ in per_run}, report.METHOD_ORDER):
      for seed in sorted(s for m, s in per_run if m == method):
        curve = per_run[method, seed]
        rows.append([method, seed, *[f'{100 * curve[s]:.1f}' if s in curve else '-'
                                     for s in steps]])
    out.append(f"Dev curve of each run, {report.TASK_TITLES.get(task, task)} (selection "
               'metric ×100 at each evaluation step):\n\n' +
               common.markdown_table(['method', 'seed', *map(str, steps)], rows))
  return '\n'.join(out)


SMOKE_STEPS = 10  # a --steps budget up to this only checks the pipeline


def section_slug(section: str) -> str:
  """File-name form of a section name: quality/mrpc-3-epochs -> quality-mrpc-3-epochs."""
  return section.replace('/', '-')


def save_numbers(root: Path, plan: dict[str, Any], section: str) -> Path:
  """Every run's results.json and dev curve, with the budget and the machine, in
  benchmarks/results/<slug>.json: what the section's tables and figures are made from."""
  runs_data = []
  for path in sorted(root.rglob('results.json')):
    data = json.loads(path.read_text())
    curve = run_curve(path.parent, data) if data.get('eval_mode', 'merged') == 'merged' else {}
    runs_data.append({'run': str(path.parent.relative_to(root)), 'results': data,
                      'dev_curve': {str(k): v for k, v in sorted(curve.items())}})
  out = common.NUMBERS / f'{section_slug(section)}.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({'section': section, 'plan': plan,
                             'machine': common.machine_description(), 'runs': runs_data},
                            indent=1))
  return out


def restore_numbers(numbers: Path, root: Path) -> list[Path]:
  """Writes the runs saved in `numbers` (`save_numbers`) back into `root`: each run's
  results.json and a metrics.jsonl holding its dev curve, for every run the root does not
  hold; the root's budget must be the saved one. Returns the run folders written."""
  try:
    saved = json.loads(numbers.read_text())
    plan, saved_runs = saved['plan'], saved['runs']
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise cli.InputError(f'--restore={numbers}: not a numbers file of this benchmark '
                         f'({type(e).__name__}: {e})') from None
  check_plan(root, plan)
  written = []
  for entry in saved_runs:
    folder = root / entry['run']
    if (folder / 'results.json').exists():
      continue
    folder.mkdir(parents=True, exist_ok=True)
    results = {**entry['results']}
    results.setdefault('machine', saved.get('machine', 'unknown'))  # where it was trained
    key = f"eval/{results['selection_metric']}"
    (folder / 'metrics.jsonl').write_text(''.join(
        json.dumps({'step': int(step), key: value}) + '\n'
        for step, value in entry['dev_curve'].items()))
    (folder / 'results.json').write_text(json.dumps(results, indent=2))
    written.append(folder)
  return written


def provenance(root: Path) -> str:
  """The runs under `root` trained on another machine than this one (restored from a
  numbers file, their results.json names the machine), grouped by machine; '' if none."""
  elsewhere: dict[str, list[str]] = {}
  for path in sorted(root.rglob('results.json')):
    machine = json.loads(path.read_text()).get('machine')
    if machine:
      elsewhere.setdefault(machine, []).append(path.parent.relative_to(root).as_posix())
  return ''.join(f"Trained elsewhere ({', '.join(f'`{r}`' for r in runs)}): "
                 f"{machine.removeprefix('Machine: ')}\n\n"
                 for machine, runs in elsewhere.items())


def draw_figures(root: Path, section: str, which: str) -> list[Path]:
  """benchmarks/figures/<slug>-params.png (Avg. score against trainable parameters) and,
  when some task was evaluated more than once, <slug>-curves.png (dev curves)."""
  common.FIGURES.mkdir(parents=True, exist_ok=True)
  slug = section_slug(section)
  table = report.summarize(report.load_results(root, which), which)
  paths = [report.plot(table, common.FIGURES / f'{slug}-params.png')]
  curves = {task: {method: {step: [100 * v for v in values] for step, values in steps.items()}
                   for method, steps in methods_.items()}
            for task, methods_ in dev_curves(root).items()
            if len({s for steps in methods_.values() for s in steps}) > 1}
  if curves:
    paths.append(report.plot_curves(curves, common.FIGURES / f'{slug}-curves.png'))
  return paths


def figure_links(paths: list[Path]) -> str:
  """Markdown images for the notes (benchmarks/notes/ -> ../figures/)."""
  return '\n\n'.join(f'![{p.stem}](../figures/{p.name})' for p in paths)


def render(root: Path, plan: dict[str, Any], figures: list[Path] = ()) -> str:
  paths = report.write_report(root, root / 'report', FLAGS.which)
  table = paths['markdown'].read_text()
  curves = dev_curve_tables(root)
  paired = paired_tables(root, FLAGS.which)
  run_curves = run_curve_tables(root) if FLAGS.run_curves else ''
  if 0 < plan['steps'] <= SMOKE_STEPS:
    smoke = ('**Smoke test (`--steps` budget): checks the pipeline, not a quality '
             'measurement.**\n\n')
  elif plan['steps'] > 0:
    smoke = (f"**Reduced budget: every task trains {plan['steps']} steps of batch 32 and is "
             'evaluated once, at the end** (one epoch is 2,105 steps on SST-2, 78 on RTE, '
             '115 on MRPC).\n\n')
  else:
    smoke = ''
  title = ('## Quality (`python -m benchmarks.quality`)' if FLAGS.section == 'quality'
           else f'### Quality run `{FLAGS.section}`')
  return (
      title + '\n\n' + smoke +
      f'{common.machine_description()}\n\n' + provenance(root) +
      f'Budget: {json.dumps(plan)}; root `{root}`. MiniLM-L6 (bundled all-MiniLM-L6-v2), '
      'config `benchmarks/quality_config.py` + `configs/presets.py`; AdaMix merged is the '
      'trained model served as one adapter, `adamix [random]` the same checkpoints '
      'evaluated with random routing.\n\n'
      f'{table}\n{train_time_table(root)}' + (f'\n{curves}' if curves else '') +
      (f'\n{paired}' if paired else '') +
      (f'\n{run_curves}' if FLAGS.run_curves and run_curves else '') +
      (f'\n{figure_links(list(figures))}\n' if figures else ''))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  root = Path(FLAGS.root)
  tasks = [sweep.canonical_task(t) for t in FLAGS.tasks]
  if set(tasks) - set(TASKS):
    raise app.UsageError(f'--tasks: choose from {TASKS}')
  plan = budget()
  if FLAGS.report_only and (root / 'quality_plan.json').exists():
    plan = json.loads((root / 'quality_plan.json').read_text())
  if FLAGS.restore:
    restored = restore_numbers(Path(FLAGS.restore), root)
    logging.info('Restored %d runs from %s into %s', len(restored), FLAGS.restore, root)
    plan = json.loads((root / 'quality_plan.json').read_text())
  if not FLAGS.report_only:
    data_dir = Path(FLAGS.data_dir).resolve()
    check_data(data_dir, tasks)
    runs = []
    for task in tasks:
      runs += sweep.plan(BASE_CONFIG, root, tasks=[task], methods=FLAGS.methods,
                         seeds=[int(s) for s in FLAGS.seeds],
                         overrides=task_overrides(task, plan, data_dir),
                         preset=plan_preset(plan))
    if FLAGS.dry_run:
      for run in runs:
        c = run.config
        budget_text = (f'{c.num_train_steps} steps' if c.num_train_steps > 0
                       else f'{c.num_epochs} epochs')
        status, changes = sweep.status(run)
        print(f'{status}  {run.workdir}  ({budget_text}, '
              f'lr={c.learning_rate}, consistency_weight={c.consistency_weight})' + changes)
      return
    check_plan(root, plan)
    start = time.time()
    try:
      outcome = sweep.run_sweep(runs)  # refuses stale runs before training any
    except ValueError as e:
      raise cli.InputError(str(e)) from e
    if FLAGS.random_eval:
      for run in runs:
        if run.method == 'adamix' and run.finished:
          done = random_routing_eval(run)
          if done:
            logging.info('Random-routing evaluation written to %s', done)
    print(f"{len(runs)} runs: {len(outcome['trained'])} trained, "
          f"{len(outcome['skipped'])} skipped (finished before), "
          f"{len(outcome['failed'])} failed; {(time.time() - start) / 60:.1f} min")
    for run in outcome['failed']:
      print(f'  failed: {run.workdir}')
  figures = draw_figures(root, FLAGS.section, FLAGS.which) if FLAGS.write else []
  text = render(root, plan, figures)
  print(text)
  if FLAGS.write:
    print(f'Updated {common.update_section(FLAGS.section, text)}, '
          f'{save_numbers(root, plan, FLAGS.section)} and '
          + ', '.join(str(p) for p in figures))
  if not FLAGS.report_only and outcome['failed']:
    raise SystemExit(1)


if __name__ == '__main__':
  cli.run(main)
