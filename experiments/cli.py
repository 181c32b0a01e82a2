"""What every command-line program of the project shares: quiet third-party logs and user
errors as one message.

A refused input (a config field, a data file, a checkpoint, an export, a command-line
usage error) ends the program with `error: <message naming the culprit>` on standard
error and exit status 1, without a traceback; `--verbosity=1` (or the environment variable
ADAMIX_JAX_TRACEBACK=1) brings the traceback back, and `--verbosity=1` other libraries'
INFO logs too. Anything else keeps its traceback.

  if __name__ == '__main__':
    cli.run(main)
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from absl import app, flags

from adamix_jax import console
from adamix_jax.config_fields import ConfigError
from adamix_jax.data.readers import DataError
from adamix_jax.hf_checkpoint import CheckpointError
from adamix_jax.interop import InteropError



class InputError(ValueError):
  """An input a program refuses that the library reports as a plain ValueError (a
  results.json, a sweep's runs trained with another config); the message names it."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, InteropError, FileNotFoundError,
               app.UsageError, InputError)


def main(fn: Callable[[list[str]], None],
         user_errors: tuple[type[BaseException], ...] = ()) -> Callable[[list[str]], None]:
  """Wraps an absl `main(argv)`: logs quieted, `USER_ERRORS` (and `user_errors`) reported
  as one line."""

  @functools.wraps(fn)
  def wrapped(argv):
    verbosity = flags.FLAGS.verbosity
    console.quiet_third_party(verbosity)
    try:
      return fn(argv)
    except USER_ERRORS + tuple(user_errors) as e:
      if verbosity > 0 or _traceback_wanted():
        raise
      _refuse(str(e))

  return wrapped


def run(fn: Callable[[list[str]], None],
        user_errors: tuple[type[BaseException], ...] = ()) -> None:
  """`app.run` of `main(fn, user_errors)`: what a program's `__main__` block calls."""
  app.run(main(fn, user_errors), flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, plus the two refusals of a `--config` flag that come as plain
  exceptions: an override of a field the config lacks (AttributeError) and a config file
  that cannot be loaded (OSError). Flags are not parsed yet, so only
  ADAMIX_JAX_TRACEBACK=1 brings their traceback back."""
  try:
    return app.parse_flags_with_usage(argv)
  except AttributeError as e:
    if _traceback_wanted():
      raise
    inner = e.args[0] if e.args else e
    inner = inner.args[0] if isinstance(inner, KeyError) and inner.args else inner
    _refuse(f'unknown config field {inner}')
  except OSError as e:
    if _traceback_wanted():
      raise
    _refuse(str(e))


def _traceback_wanted() -> bool:
  return os.environ.get('ADAMIX_JAX_TRACEBACK', '') not in ('', '0')


def _refuse(message: str) -> None:
  """`error: <message>` as one line on standard error, and exit status 1."""
  text = ' '.join(line.strip() for line in message.splitlines() if line.strip())
  print(f'error: {text}', file=sys.stderr)
  sys.exit(1)
