"""The paper's results table from finished runs: methods x tasks, mean ± std over seeds.

`load_results` reads every WORKDIR/results.json under a root (`train.train_and_evaluate`
writes them; `experiments/sweep.py` lays them out as ROOT/<task>/<method>/seed_<seed>),
`summarize` aggregates them, and `to_markdown` / `write_csv` / `plot` render the table.

Conventions (the AdaMix / LoRA GLUE tables):
- Scores are dev-set metrics ×100: `which='best'` takes each run's best evaluation (the
  checkpoint selected on the task's selection metric, as the paper reports), `'final'` its
  last one.
- A cell is the mean ± the *sample* standard deviation (ddof=1) over seeds; one seed
  shows the mean alone.
- Each task has a headline metric, the first number of its cell and the one averaged: its
  selection metric on its first eval split (CoLA MCC, STS-B Pearson, MNLI matched
  accuracy, accuracy elsewhere; MRPC and QQP accuracy, as the AdaMix and LoRA tables).
  The task's other metrics follow in the same cell (MRPC and QQP: accuracy / F1; STS-B:
  Pearson / Spearman; MNLI: matched / mismatched); GLUE's 'combined' is left out.
- Avg. is the mean over the table's tasks of the headline means (the paper's Avg.
  column). A method missing some tasks gets the mean over those it has, marked '*'.
- Parameters are those the papers count: trainable parameters outside the task head
  (`trainable_backbone`: adapters, LoRA factors, biases for BitFit, everything for full
  fine-tuning), also as % of the pretrained backbone; for mixtures also the count after
  merging the experts (what inference runs).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any, Sequence

from adamix_jax import registry

WHICH = ('best', 'final')
# Column and row order of the AdaMix tables; anything else follows alphabetically.
TASK_ORDER = ('mnli', 'qnli', 'sst2', 'qqp', 'mrpc', 'cola', 'rte', 'stsb', 'subj', 'mpqa')
METHOD_ORDER = ('full', 'head_only', 'bitfit', 'adapter', 'lora', 'adamix', 'adamix_lora')
MIXTURES = registry.MIXTURES
TASK_TITLES = {'mnli': 'MNLI', 'qnli': 'QNLI', 'sst2': 'SST-2', 'qqp': 'QQP', 'mrpc': 'MRPC',
               'cola': 'CoLA', 'rte': 'RTE', 'stsb': 'STS-B', 'subj': 'Subj', 'mpqa': 'MPQA'}
METRIC_TITLES = {'accuracy': 'acc', 'f1': 'F1', 'mcc': 'MCC', 'pearson': 'Pearson',
                 'spearman': 'Spearman'}
PARAMETER_FIELDS = ('trainable_backbone', 'trainable_backbone_pct',
                    'merged_trainable_backbone', 'merged_trainable_backbone_pct')


@dataclasses.dataclass(frozen=True)
class RunResult:
  """One finished run (one results.json)."""

  path: Path
  task: str
  method: str
  seed: int
  checkpoint: str
  eval_mode: str
  metrics: dict[str, float]  # of `which`: {'accuracy': .9} or {'dev_matched/accuracy': .9}
  selection_metric: str
  parameters: dict[str, Any]
  eval_splits: tuple[str, ...] = ()  # () in results written before splits were recorded

  @property
  def row(self) -> str:
    """The table row: the method, and for a mixture evaluated otherwise than merged, how."""
    if self.method in MIXTURES and self.eval_mode != 'merged':
      return f'{self.method} [{self.eval_mode}]'
    return self.method


@dataclasses.dataclass(frozen=True)
class Cell:
  """One method on one task. Scores are ×100; `stds` are None for a single seed."""

  keys: tuple[str, ...]  # metric keys, headline first
  means: tuple[float, ...]
  stds: tuple[float | None, ...]
  seeds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Row:
  method: str
  cells: dict[str, Cell]
  average: float | None  # ×100, over the tasks in `cells`
  complete: bool  # has every task of the table
  parameters: dict[str, tuple[float, ...]]  # PARAMETER_FIELDS -> distinct values

  @property
  def seed_counts(self) -> tuple[int, ...]:
    return tuple(sorted({len(c.seeds) for c in self.cells.values()}))


@dataclasses.dataclass(frozen=True)
class Table:
  which: str
  tasks: tuple[str, ...]
  keys: dict[str, tuple[str, ...]]  # task -> metric keys, headline first
  rows: tuple[Row, ...]
  checkpoint: str
  eval_splits: tuple[str, ...] = ()  # every run's evaluation splits; () if not all recorded


def order(values, preferred: Sequence[str]) -> list[str]:
  """`values` sorted as in `preferred` (e.g. TASK_ORDER), the others after it, by name."""
  return sorted(values, key=lambda v: (preferred.index(v) if v in preferred
                                       else len(preferred), v))


def metric_keys(metrics: dict[str, float], selection_metric: str) -> tuple[str, ...]:
  """The keys a table shows, headline first: the selection metric (on the 'test' split when
  there is one: LM-BFF selects on dev and reports test; else on the first split), then the
  other metrics in the run's order; no 'combined'."""
  keys = [k for k in metrics if k.rsplit('/', 1)[-1] != 'combined']
  headline = [k for k in keys if k == f'test/{selection_metric}']
  headline = headline or [k for k in keys if k.rsplit('/', 1)[-1] == selection_metric][:1]
  if not headline:
    raise ValueError(f'no {selection_metric!r} among the metrics {list(metrics)}')
  return tuple(headline + [k for k in keys if k != headline[0]])


def load_results(root: str | os.PathLike, which: str = 'best') -> list[RunResult]:
  """Every results.json under `root`, with the metrics of `which` ('best' or 'final')."""
  if which not in WHICH:
    raise ValueError(f'which={which!r}: choose from {WHICH}')
  root = Path(root)
  paths = sorted(root.rglob('results.json'))
  if not paths:
    raise FileNotFoundError(f'No results.json under {root}: nothing to report.')
  runs, seen = [], {}
  for path in paths:
    try:
      data = json.loads(path.read_text())
      run = RunResult(path=path, task=data['task'], method=data['method'],
                      seed=int(data['seed']), checkpoint=str(data['checkpoint']),
                      eval_mode=data.get('eval_mode', 'merged'),
                      metrics={k: float(v) for k, v in data[which]['metrics'].items()},
                      selection_metric=data['selection_metric'],
                      parameters=data['parameters'],
                      eval_splits=tuple(data.get('eval_splits', ())))
      metric_keys(run.metrics, run.selection_metric)
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f'{path}: not a complete results.json ({type(e).__name__}: {e}).'
                       ) from None
    key = (run.task, run.row, run.seed)
    if key in seen:
      raise ValueError(f'{seen[key]} and {path} are both {run.task} / {run.row} / seed '
                       f'{run.seed}: report them from separate roots.')
    seen[key] = path
    runs.append(run)
  return runs


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (ddof=1); None for a single value."""
  mean = statistics.fmean(values)
  return mean, (statistics.stdev(values) if len(values) > 1 else None)


def summarize(runs: Sequence[RunResult], which: str = 'best') -> Table:
  """Aggregates runs into the methods x tasks table (see the module docstring)."""
  checkpoints = sorted({r.checkpoint for r in runs})
  if len(checkpoints) > 1:
    examples = {c: next(str(r.path) for r in runs if r.checkpoint == c) for c in checkpoints}
    raise ValueError(f'The runs use {len(checkpoints)} backbones {examples}: one table '
                     'compares methods on one backbone; report each from its own root.')
  tasks = tuple(order({r.task for r in runs}, TASK_ORDER))
  keys: dict[str, tuple[str, ...]] = {}
  for run in runs:
    run_keys = metric_keys(run.metrics, run.selection_metric)
    if keys.setdefault(run.task, run_keys) != run_keys:
      raise ValueError(f'{run.path}: metrics {run_keys} differ from the other {run.task} '
                       f'runs\' {keys[run.task]}.')
  rows = []
  for method in order({r.row for r in runs}, METHOD_ORDER):
    mine = [r for r in runs if r.row == method]
    cells = {}
    for task in tasks:
      group = sorted((r for r in mine if r.task == task), key=lambda r: r.seed)
      if not group:
        continue
      stats = [mean_std([100.0 * r.metrics[k] for r in group]) for k in keys[task]]
      cells[task] = Cell(keys=keys[task], means=tuple(m for m, _ in stats),
                         stds=tuple(s for _, s in stats),
                         seeds=tuple(r.seed for r in group))
    average = statistics.fmean(c.means[0] for c in cells.values())
    parameters = {f: tuple(sorted({r.parameters[f] for r in mine if f in r.parameters}))
                  for f in PARAMETER_FIELDS}
    rows.append(Row(method=method, cells=cells, average=average,
                    complete=len(cells) == len(tasks), parameters=parameters))
  splits = (() if any(not r.eval_splits for r in runs)
            else tuple(order({s for r in runs for s in r.eval_splits}, ())))
  return Table(which=which, tasks=tasks, keys=keys, rows=tuple(rows),
               checkpoint=checkpoints[0], eval_splits=splits)


# ---------------------------------------------------------------------------------------
# Rendering.


def _splits_text(splits: Sequence[str]) -> str:
  if not splits:
    return ("each run's evaluation split (GLUE: dev; the few-shot protocol: test)")
  return 'the ' + ' / '.join(f'`{s}`' for s in splits) + (' split' if len(splits) == 1
                                                          else ' splits')


def score(mean: float, std: float | None) -> str:
  """A table cell: '80.4±1.0', or the mean alone without a std."""
  if math.isnan(mean):
    return 'nan'
  return f'{mean:.1f}' if std is None else f'{mean:.1f}±{std:.1f}'


def _count(n: float) -> str:
  """Parameter counts as the papers print them: 355.0M, 0.80M, 12.3K."""
  n = float(n)
  if n >= 1e8:
    return f'{n / 1e6:.1f}M'
  if n >= 1e5:
    return f'{n / 1e6:.2f}M'
  if n >= 1e3:
    return f'{n / 1e3:.1f}K'
  return f'{n:.0f}'


def _percent(p: float) -> str:
  return f'{p:.3g}%'


def _values(values: tuple[float, ...], fmt) -> str:
  if not values:
    return '-'
  return fmt(values[0]) if len(values) == 1 else f'{fmt(values[0])}–{fmt(values[-1])}'


def _task_title(task: str, keys: tuple[str, ...]) -> str:
  title = TASK_TITLES.get(task, task)
  splits = {k.rsplit('/', 1)[0] for k in keys if '/' in k}
  if task == 'mnli' and splits == {'dev_matched', 'dev_mismatched'}:
    return f'{title} m/mm'
  names = [METRIC_TITLES.get(k.rsplit('/', 1)[-1], k.rsplit('/', 1)[-1]) for k in keys]
  if len(splits) > 1:  # other multi-split tasks: name the splits
    names = [f"{k.rsplit('/', 1)[0]} {n}" for k, n in zip(keys, names)]
  return f"{title} {'/'.join(names)}"


def _seeds(row: Row) -> str:
  counts = row.seed_counts
  return str(counts[0]) if len(counts) == 1 else f'{counts[0]}–{counts[-1]}'


def to_markdown(table: Table) -> str:
  """The table in Markdown, with the notes that say how to read it."""
  header = (['Method', '#Params', '% backbone', 'Merged', 'Seeds']
            + [_task_title(t, table.keys[t]) for t in table.tasks] + ['Avg.'])
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join([':---'] + ['---:'] * (len(header) - 1)) + '|']
  for row in table.rows:
    p = row.parameters
    merged = (_values(p['merged_trainable_backbone'], _count)
              if row.method.split(' ')[0] in MIXTURES else '')
    cells = [' / '.join(score(m, s) for m, s in zip(row.cells[t].means, row.cells[t].stds))
             if t in row.cells else '-' for t in table.tasks]
    average = f'{row.average:.1f}' + ('' if row.complete else '*')
    lines.append('| ' + ' | '.join(
        [row.method, _values(p['trainable_backbone'], _count),
         _values(p['trainable_backbone_pct'], _percent), merged, _seeds(row)]
        + cells + [average]) + ' |')
  which = ('best evaluation of each run (checkpoint selected on the dev set, as the paper)'
           if table.which == 'best' else 'final evaluation of each run (last step)')
  notes = [
      '',
      f'Backbone: `{table.checkpoint}`. Scores ×100 on {_splits_text(table.eval_splits)} '
      f'from the {which}: mean ± sample '
      'standard deviation (ddof=1) over seeds; a single seed shows the mean only.',
      'The first number of a cell is the task\'s headline metric (the one averaged); the '
      'others follow it. Avg. = mean of the headline means over the tasks'
      + ('; * = over the tasks that method has only.'
         if not all(r.complete for r in table.rows) else '.'),
      '#Params: trainable parameters outside the task head (% of the pretrained backbone); '
      'Merged: after averaging the experts into one module (what inference runs).',
  ]
  return '\n'.join(lines + notes) + '\n'


def csv_rows(table: Table) -> tuple[list[str], list[dict[str, Any]]]:
  """The table as (columns, rows): scores ×100 unrounded, stds empty for one seed."""
  columns = ['method', 'seeds'] + list(PARAMETER_FIELDS)
  for task in table.tasks:
    for key in table.keys[task]:
      columns += [f'{task}/{key}', f'{task}/{key}/std']
    columns.append(f'{task}/n')
  columns += ['avg', 'avg_num_tasks']
  rows = []
  for row in table.rows:
    out: dict[str, Any] = {'method': row.method, 'seeds': _seeds(row)}
    for field, values in row.parameters.items():
      out[field] = _values(values, repr)
    for task, cell in row.cells.items():
      for key, mean, std in zip(cell.keys, cell.means, cell.stds):
        out[f'{task}/{key}'] = repr(mean)
        out[f'{task}/{key}/std'] = '' if std is None else repr(std)
      out[f'{task}/n'] = len(cell.seeds)
    out['avg'] = repr(row.average)
    out['avg_num_tasks'] = len(row.cells)
    rows.append(out)
  return columns, rows


def write_csv(table: Table, path: str | os.PathLike) -> Path:
  columns, rows = csv_rows(table)
  path = Path(path)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=columns, restval='')
    writer.writeheader()
    writer.writerows(rows)
  return path


def plot(table: Table, path: str | os.PathLike) -> Path:
  """Avg. score against trainable parameters (log x), one point per method; a mixture
  also gets a hollow point at its merged size. Methods training no parameter outside the
  head (head_only) cannot sit on a log axis and are listed in the title instead."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  left_out = []
  for i, row in enumerate(table.rows):
    counts = row.parameters['trainable_backbone']
    if not counts or counts[-1] <= 0:
      left_out.append(row.method)
      continue
    x = statistics.fmean(counts)
    color = f'C{i % 10}'
    label = row.method + ('' if row.complete else '*')
    ax.scatter([x], [row.average], color=color, s=40, zorder=3)
    ax.annotate(label, (x, row.average), textcoords='offset points', xytext=(5, 4),
                fontsize=8)
    merged = row.parameters['merged_trainable_backbone']
    if row.method.split(' ')[0] in MIXTURES and merged and merged[-1] > 0:
      xm = statistics.fmean(merged)
      ax.scatter([xm], [row.average], facecolors='none', edgecolors=color, s=40, zorder=3)
      ax.plot([xm, x], [row.average, row.average], ':', color=color, linewidth=1)
  ax.set_xscale('log')
  ax.margins(x=0.15, y=0.15)  # room for the labels of the outermost points
  ax.set_xlabel('trainable parameters outside the head (log scale; hollow: merged)')
  ax.set_ylabel(f'Avg. score ×100 ({table.which})')
  title = f'{len(table.tasks)} task(s): ' + ', '.join(TASK_TITLES.get(t, t)
                                                      for t in table.tasks)
  if left_out:
    title += f"\nnot shown (0 parameters outside the head): {', '.join(left_out)}"
  ax.set_title(title, fontsize=9)
  ax.grid(True, which='both', alpha=0.3)
  fig.tight_layout()
  path = Path(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_curves(curves: dict[str, dict[str, dict[int, Sequence[float]]]],
                path: str | os.PathLike, *, ylabel: str = 'dev selection metric ×100') -> Path:
  """Dev curves, one panel per task: for each method the mean over seeds at every
  evaluation step, with a band of ± one sample standard deviation where there are several
  seeds (`curves`: task -> method -> step -> per-seed values ×100)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  tasks = order(curves, TASK_ORDER)
  if not tasks:
    raise ValueError('no dev curve to plot')
  fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for i, method in enumerate(order(curves[task], METHOD_ORDER)):
      steps = sorted(curves[task][method])
      stats = [mean_std(list(curves[task][method][s])) for s in steps]
      means = [m for m, _ in stats]
      seeds = max(len(v) for v in curves[task][method].values())
      ax.plot(steps, means, marker='o', markersize=3, color=f'C{i % 10}',
              label=f'{method} ({seeds} seed{"s" if seeds > 1 else ""})')
      if any(sd is not None for _, sd in stats):
        low = [m - (sd or 0.0) for m, sd in stats]
        high = [m + (sd or 0.0) for m, sd in stats]
        ax.fill_between(steps, low, high, color=f'C{i % 10}', alpha=0.15, linewidth=0)
    ax.set_title(TASK_TITLES.get(task, task), fontsize=10)
    ax.set_xlabel('training step')
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  path = Path(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_report(root: str | os.PathLike, out_dir: str | os.PathLike,
                 which: str = 'best') -> dict[str, Path]:
  """Writes results.md, results.csv and results.png for the runs under `root`."""
  table = summarize(load_results(root, which), which)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  markdown = out / 'results.md'
  markdown.write_text(to_markdown(table))
  return {'markdown': markdown, 'csv': write_csv(table, out / 'results.csv'),
          'plot': plot(table, out / 'results.png')}
