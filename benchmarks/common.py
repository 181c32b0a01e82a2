"""What the benchmark scripts share: the machine's description, interleaved timing, and
the sections of the notes each script owns.

Scripts write their tables into `benchmarks/notes/<kind>.md` (a section `quality/3-epochs`
goes to notes/quality.md), between markers, so that a re-run replaces its own tables and
leaves the others and the hand-written findings alone. `benchmarks/RESULTS.md` is the
report written for readers from them: the headline figures and one table per question.

Timing on a shared machine is noisy, so variants are never timed one after another:
`time_interleaved` runs one call of every variant per round (A, B, C, A, B, C, ...) and
reports medians, so a burst of load from another process hits all variants alike.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

RESULTS = Path(__file__).resolve().parent / 'RESULTS.md'
NOTES = Path(__file__).resolve().parent / 'notes'
FIGURES = Path(__file__).resolve().parent / 'figures'
NUMBERS = Path(__file__).resolve().parent / 'results'  # raw JSON behind tables and figures


def num_cores() -> int:
  """CPU cores this process may run on (XLA's CPU thread pool uses all of them)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_model() -> str:
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def machine_description(extra: dict[str, str] | None = None) -> str:
  """One Markdown line: date, CPU, cores, memory, library versions."""
  try:
    pages = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    memory = f'{pages / 2**30:.0f} GiB'
  except (ValueError, OSError, AttributeError):
    memory = '?'
  parts = [f'{datetime.date.today().isoformat()}', f'{cpu_model()}, {num_cores()} cores, '
           f'{memory} RAM', f'Python {platform.python_version()}']
  parts += [f'{p} {_version(p)}' for p in ('jax', 'jaxlib', 'flax', 'optax', 'torch',
                                            'transformers', 'peft')]
  parts += [f'{k} {v}' for k, v in (extra or {}).items()]
  return 'Machine: ' + '; '.join(parts) + '.'


def time_interleaved(fns: dict[str, Callable[[], Any]], rounds: int, *,
                     warmup: int = 2, log: Callable[[str], None] | None = print
                     ) -> dict[str, list[float]]:
  """Seconds per call of each function, `rounds` samples each, interleaved.

  Each function must block until its result is ready (`jax.block_until_ready`). The
  `warmup` calls of each (compilation, first-touch allocation) are not timed.
  """
  for name, fn in fns.items():
    for _ in range(warmup):
      fn()
    if log:
      log(f'  warmed up {name}')
  samples: dict[str, list[float]] = {name: [] for name in fns}
  for r in range(rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      samples[name].append(time.perf_counter() - start)
    if log:
      log(f'  round {r + 1}/{rounds} done')
  return samples


def median(values: Sequence[float]) -> float:
  return statistics.median(values)


def verdict(value: float, target: float, *, at_least: bool = False) -> str:
  ok = value >= target if at_least else value <= target
  return 'PASS' if ok else 'MISS'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join([':---'] + ['---:'] * (len(header) - 1)) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def notes_path(name: str) -> Path:
  """The notes file of section `name`: its first path component (`quality/3-epochs` ->
  notes/quality.md)."""
  kind = name.split('/')[0]
  if not re.fullmatch(r'[\w-]+', kind):
    raise ValueError(f'section {name!r}: its first component must be letters, digits, _ or -')
  return NOTES / f'{kind}.md'


def update_section(name: str, body: str, path: Path | None = None) -> Path:
  """Writes `body` between the markers of section `name` in `path` (default:
  `notes_path(name)`), replacing what was there; a new section is appended. Other sections
  are left as they are. Returns the file written."""
  path = notes_path(name) if path is None else path
  begin, end = f'<!-- BEGIN {name} -->', f'<!-- END {name} -->'
  block = f'{begin}\n{body.rstrip()}\n{end}\n'
  text = (path.read_text() if path.exists()
          else f"# {name.split('/')[0]}: tables written by the benchmark scripts\n")
  pattern = re.compile(re.escape(begin) + r'.*?' + re.escape(end) + r'\n?', re.DOTALL)
  if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
  else:
    text = text.rstrip('\n') + '\n\n' + block
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path
