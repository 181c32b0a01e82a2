"""Runs one command-line program many times in one process, as `python -m MODULE ARGV...`
would, and records what each run showed and left behind.

  python tests/cli_errors_worker.py MODULE CASES.json OUT.json WATCHED_DIR

CASES.json is a list of argv lists. For each, the module is executed as `__main__` (its own
`if __name__ == '__main__':` block, so its own error wiring is what runs); the flags it
defined are removed afterwards so that the next run defines and parses them afresh. OUT.json
gets, per case: the exit code, standard output and error, the WARNING-and-above log
records, the traceback of an exception that escaped (what the interpreter would print), and
a digest of every file and directory under WATCHED_DIR afterwards. Importing JAX once for
all cases keeps `test_cli_errors` fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import runpy
import sys
import traceback


def tree_digest(root: str) -> str:
  """Names and bytes of every file and directory under `root`."""
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    h.update(b'D' + os.path.relpath(dirpath, root).encode())
    for name in sorted(filenames):
      path = os.path.join(dirpath, name)
      h.update(b'F' + os.path.relpath(path, root).encode())
      with open(path, 'rb') as f:
        h.update(hashlib.sha256(f.read()).digest())
  return h.hexdigest()


class _Records(logging.Handler):

  def __init__(self):
    super().__init__(logging.WARNING)
    self.lines: list[str] = []

  def emit(self, record):
    text = record.getMessage()
    if record.exc_info:
      text += '\n' + ''.join(traceback.format_exception(*record.exc_info))
    self.lines.append(text)


def run_case(module: str, argv: list[str], watched: str) -> dict:
  from absl import flags  # pylint: disable=import-outside-toplevel
  before = set(flags.FLAGS)
  records = _Records()
  logging.getLogger().addHandler(records)
  out, err = io.StringIO(), io.StringIO()
  code, escaped = None, None
  sys.argv = [module.replace('.', '/') + '.py', *argv]
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      runpy.run_module(module, run_name='__main__', alter_sys=True)
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if not isinstance(e.code, (int, type(None))):
      err.write(f'{e.code}\n')  # what the interpreter prints for SystemExit('text')
  except BaseException:  # pylint: disable=broad-except
    code = 1
    escaped = traceback.format_exc()
  finally:
    logging.getLogger().removeHandler(records)
    for name in set(flags.FLAGS) - before:
      if _defined_by_program(name, module):
        delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
  return {'argv': argv, 'code': code, 'stdout': out.getvalue(), 'stderr': err.getvalue(),
          'log': records.lines, 'traceback': escaped, 'digest': tree_digest(watched)}


def import_dependencies(module: str) -> None:
  """Imports `module` once and forgets it again, keeping what it imported (and the flags
  those define): afterwards a case defines only the module's own flags, and those of the
  config it parses."""
  import importlib  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  before = set(flags.FLAGS)
  importlib.import_module(module)
  for name in set(flags.FLAGS) - before:
    if _defined_by_program(name, module):
      delattr(flags.FLAGS, name)
  del sys.modules[module]


def _defined_by_program(name: str, module: str) -> bool:
  """The program's own flags (and its config's fields), not those of a library it imports:
  the libraries stay imported, so their flags must stay defined."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  owner = flags.FLAGS.find_module_defining_flag(name) or ''
  return owner in (module, '__main__', '') or owner.endswith('.py') or name.startswith('config')


def main() -> None:
  module, cases_file, out_file, watched = sys.argv[1:5]
  sys.path.insert(0, os.getcwd())
  import_dependencies(module)
  with open(cases_file) as f:
    cases = json.load(f)
  results = [run_case(module, argv, watched) for argv in cases]
  with open(out_file, 'w') as f:
    json.dump(results, f)


if __name__ == '__main__':
  main()
