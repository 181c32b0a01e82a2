"""What a run prints: the project's own messages, one progress line per log interval and one
line per evaluation. Other libraries' INFO messages (orbax's checkpoint internals, clu's
line per logged scalar, JAX's backend probing, TensorFlow's start-up notices) are dropped
unless `--verbosity` is raised; their warnings and errors always show. TensorBoard and
metrics.jsonl receive every scalar either way.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from absl import logging as absl_logging

PROJECT_PACKAGES = ('adamix_jax', 'experiments', 'benchmarks', 'configs')


class _ProjectMessagesOnly(logging.Filter):
  """Passes warnings and errors, and INFO records logged from the project's own files."""

  def __init__(self, roots: tuple[str, ...]):
    super().__init__()
    self.roots = roots

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.pathname.startswith(self.roots)


def _project_roots() -> tuple[str, ...]:
  """The project's folders: beside the installed package, and the running program's own
  package folder (experiments/ or benchmarks/ of a checkout when adamix_jax is installed
  elsewhere)."""
  here = os.path.dirname(os.path.abspath(__file__))  # .../adamix_jax
  parent = os.path.dirname(here)
  roots = [os.path.join(parent, p) + os.sep for p in PROJECT_PACKAGES] + [here + os.sep]
  main_file = getattr(sys.modules.get('__main__'), '__file__', None)
  if main_file:
    roots.append(os.path.dirname(os.path.abspath(main_file)) + os.sep)
  return tuple(roots)


def quiet_third_party(verbosity: int = 0) -> None:
  """Drops other libraries' INFO messages unless `verbosity` > 0 (absl's --verbosity).

  Call it at the start of a command-line program, before TensorFlow is imported.
  """
  if verbosity > 0:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow's C++ INFO and WARNING
  # On Intel CPUs TensorFlow announces its oneDNN kernels at import, past the level above.
  # TensorFlow computes nothing here (it writes TensorBoard summaries and reads TFDS
  # files), so those kernels are off.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  # transformers (tokenizers only, imported later) warns that PyTorch is missing.
  os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _ProjectMessagesOnly) for f in handler.filters):
    handler.addFilter(_ProjectMessagesOnly(_project_roots()))


def _duration(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{secs:02d}s'


class Progress:
  """One line per log interval: step/total, steps/s, ETA, loss and learning rate; and a
  progress bar (tqdm) when standard output is a terminal."""

  def __init__(self, start_step: int, total_steps: int, active: bool = True):
    self.total = total_steps
    self.last_step, self.last_time = start_step, time.time()
    self.bar = None
    if active and sys.stdout.isatty():
      import tqdm  # pylint: disable=import-outside-toplevel
      self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                           dynamic_ncols=True, leave=False)
    self.active = active

  def step(self, step: int) -> None:
    if self.bar is not None:
      self.bar.update(step - self.bar.n)

  def log(self, step: int, scalars: dict[str, Any]) -> str:
    """Logs (and returns) the progress line for `step` from its train scalars."""
    now = time.time()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    eta = (self.total - step) / rate if rate > 0 else float('inf')
    line = (f'step {step}/{self.total} · {rate:.2f} steps/s · ETA '
            f'{_duration(eta) if eta != float("inf") else "?"} · '
            f'loss {float(scalars["loss"]):.4f} · lr {float(scalars["learning_rate"]):.2e}')
    if self.active:
      absl_logging.info('%s', line)
    return line

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
