"""What every command-line program of the project shares: quiet third-party logs and user
errors as one message.

A refused input (a config field, a data file, a checkpoint, an export) ends the program with
`error: <message naming the culprit>` on standard error and exit status 1, without a
traceback; `--verbosity=1` brings the traceback back (and other libraries' INFO logs).
Anything else keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

from absl import flags

from adamix_jax import console
from adamix_jax.config_fields import ConfigError
from adamix_jax.data.readers import DataError
from adamix_jax.hf_checkpoint import CheckpointError
from adamix_jax.interop import InteropError

USER_ERRORS = (ConfigError, DataError, CheckpointError, InteropError, FileNotFoundError)


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
      if verbosity > 0:
        raise
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)

  return wrapped
