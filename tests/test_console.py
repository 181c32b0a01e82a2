"""What a run prints: other libraries' INFO dropped, the project's lines and all warnings kept."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from adamix_jax import console


def _record(path: str, level: int) -> logging.LogRecord:
  return logging.LogRecord('absl', level, path, 1, 'message', None, None)


def test_filter_keeps_project_info_and_everyones_warnings():
  keep = console._ProjectMessagesOnly(console._project_roots())  # pylint: disable=protected-access
  package = os.path.dirname(os.path.abspath(console.__file__))
  assert keep.filter(_record(os.path.join(package, 'train.py'), logging.INFO))
  third_party = '/usr/lib/python3/site-packages/orbax/checkpoint/checkpoint_manager.py'
  assert not keep.filter(_record(third_party, logging.INFO))
  assert keep.filter(_record(third_party, logging.WARNING))
  # A file merely named like the package elsewhere is not the project's.
  assert not keep.filter(_record('/elsewhere/adamix_jax_old/train.py', logging.INFO))


def test_progress_line_has_step_rate_eta_loss_and_rate():
  progress = console.Progress(start_step=0, total_steps=100, active=False)
  line = progress.log(25, {'loss': 0.51234, 'learning_rate': 9.5e-4})
  assert line.startswith('step 25/100 · ')
  assert ' steps/s · ETA ' in line and line.endswith('· loss 0.5123 · lr 9.50e-04')


_IMPORTS = """
import sys
from adamix_jax import console
console.quiet_third_party(int(sys.argv[1]))
if int(sys.argv[1]) == 0:
  import tensorflow
from transformers.utils import logging
logging.get_logger('transformers.tokenization_utils_base').warning('TRANSFORMERS-WARNING')
"""


def test_quiet_programs_import_tensorflow_and_transformers_without_a_word():
  env = {k: v for k, v in os.environ.items()
         if k not in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS', 'TRANSFORMERS_VERBOSITY')}
  quiet = subprocess.run([sys.executable, '-c', _IMPORTS, '0'], env=env, capture_output=True,
                         text=True, check=True)
  assert quiet.stdout + quiet.stderr == ''
  # The same warning is heard with --verbosity=1 (TensorFlow left out: only the switch is shown).
  loud = subprocess.run([sys.executable, '-c', _IMPORTS, '1'], env=env, capture_output=True,
                        text=True, check=True)
  assert 'TRANSFORMERS-WARNING' in loud.stderr
