"""The public readers in one import: GLUE TSVs, tfds GLUE, your own CSV/TSV/JSONL, and
the config-driven entry points.

Each source lives in its own module (`glue`, `tfds_glue`, `custom`, `fewshot_list`,
`lmbff`, `sample`) and is found by name in `sources.SOURCES`; the row checks and file
formats they share are in `formats`. Every reader is strict: a missing file or column, a label outside the task's
label set, a non-numeric regression score, an empty text or a malformed line raises a
`DataError` whose message starts with `<file>:<line>:`; with `skip_bad_rows=True`
row-level problems are counted and logged instead.
"""

from adamix_jax.data.custom import read_custom
from adamix_jax.data.formats import DataError, Example
from adamix_jax.data.glue import GLUE_LAYOUTS, SAMPLES_DIR, read_glue_tsv
from adamix_jax.data.sources import load_examples, task_from_config
from adamix_jax.data.tfds_glue import read_tfds

__all__ = ['DataError', 'Example', 'GLUE_LAYOUTS', 'SAMPLES_DIR', 'load_examples',
           'read_custom', 'read_glue_tsv', 'read_tfds', 'task_from_config']
