"""The library's modules import one way: each only from the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'adamix_jax'

# Bottom to top. A module may import modules of lower layers only (the data and interop
# packages count as one module each: their internals are their own business).
LAYERS = [
    {'routing', 'consistency', 'data', 'distributed', 'metric_logs', 'config_fields',
     'registry', 'console'},
    {'adapters', 'report'},
    {'encoder'},
    {'hf_checkpoint'},
    {'model'},
    {'merging', 'inference', 'prompts', 'optim'},
    {'fisher', 'methods'},
    {'export', 'sharding', 'checkpoints'},
    {'interop', 'predict'},
    {'runs'},
    {'evaluation'},
    {'train'},
    {'sweep'},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
PACKAGES = ('data', 'interop')


def _name(path: Path) -> str:
  parts = path.relative_to(PACKAGE).with_suffix('').parts
  if parts[0] in PACKAGES:
    return parts[0]
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def _imports(path: Path) -> set[str]:
  """The adamix_jax modules a file imports, anywhere in it (function-level imports too)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module == 'adamix_jax':
        found |= {alias.name for alias in node.names}
      elif node.module.startswith('adamix_jax.'):
        found.add(node.module[len('adamix_jax.'):])
    elif isinstance(node, ast.Import):
      found |= {a.name[len('adamix_jax.'):] for a in node.names
                if a.name.startswith('adamix_jax.')}
  return {f.split('.')[0] if f.split('.')[0] in PACKAGES else f for f in found}


def test_every_module_has_a_layer():
  modules = {_name(p) for p in PACKAGE.rglob('*.py')} - {''}
  assert modules - set(LAYER) == set()
  assert set(LAYER) - modules == set()


def test_modules_import_only_from_lower_layers():
  upward = []
  for path in sorted(PACKAGE.rglob('*.py')):
    name = _name(path)
    if not name:
      continue
    for dep in _imports(path) - {name}:
      if LAYER[dep] >= LAYER[name]:
        upward.append(f'{path.relative_to(ROOT)} ({name}, layer {LAYER[name]}) imports '
                      f'{dep} (layer {LAYER[dep]})')
  assert not upward, '\n'.join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
  module = tmp_path / 'x.py'
  module.write_text('def f():\n  from adamix_jax import train\n  from adamix_jax.data import '
                    'readers\n')
  assert _imports(module) == {'train', 'data'}


def test_loading_a_config_does_not_load_the_trainer():
  code = ('import sys; from configs import presets, glue_sst2; glue_sst2.get_config(); '
          "print(sorted(m for m in ('adamix_jax.train', 'adamix_jax.runs', 'orbax', "
          "'orbax.checkpoint', 'clu', 'tensorflow') if m in sys.modules))")
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == '[]'
