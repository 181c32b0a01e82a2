"""The library's modules import one way: each only from the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys

import pytest

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
    {'serving'},
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


# Inside the data package, bottom to top: the task registry and the config block; the file
# formats every source shares; one module per source; the few-shot folders (which read
# GLUE and custom files) and their two sources; the source registry; the facade of public
# readers.
DATA = PACKAGE / 'data'
DATA_LAYERS = [
    {'config', 'tasks'},
    {'formats'},
    {'glue', 'tfds_glue', 'custom', 'sample', 'metrics', 'pipeline'},
    {'fewshot'},
    {'fewshot_list', 'lmbff'},
    {'sources'},
    {'readers'},
]
DATA_LAYER = {name: i for i, names in enumerate(DATA_LAYERS) for name in names}


def _data_imports(path: Path) -> set[str]:
  """The adamix_jax.data modules a file imports ('from adamix_jax.data import x' too)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module == 'adamix_jax.data':
        found |= {alias.name for alias in node.names if alias.name in DATA_LAYER}
      elif node.module.startswith('adamix_jax.data.'):
        found.add(node.module.split('.')[2])
    elif isinstance(node, ast.Import):
      found |= {a.name.split('.')[2] for a in node.names
                if a.name.startswith('adamix_jax.data.')}
  return found


def test_every_data_module_has_a_layer():
  modules = {p.stem for p in DATA.glob('*.py')} - {'__init__'}
  assert modules == set(DATA_LAYER)


def test_data_modules_import_only_from_lower_layers():
  upward = []
  for name, layer in sorted(DATA_LAYER.items()):
    for dep in _data_imports(DATA / f'{name}.py') - {name}:
      if DATA_LAYER[dep] >= layer:
        upward.append(f'data/{name}.py (layer {layer}) imports data.{dep} (layer '
                      f'{DATA_LAYER[dep]})')
  assert not upward, '\n'.join(upward)


@pytest.mark.parametrize('name', sorted(DATA_LAYER))
def test_a_data_module_imports_without_the_others(name):
  """Each module loads on its own, its package's __init__ bypassed: no import cycle hides
  behind the order in which __init__ imports them."""
  code = ('import importlib.util, sys, types\n'
          f'root = {str(DATA)!r}\n'
          "package = types.ModuleType('adamix_jax.data'); package.__path__ = [root]\n"
          "sys.modules['adamix_jax.data'] = package\n"
          f"importlib.import_module('adamix_jax.data.{name}')\n"
          "print(sorted(m.split('.')[2] for m in sys.modules if m.startswith('adamix_jax.data.')))")
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  loaded = set(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
  assert all(DATA_LAYER[m] <= DATA_LAYER[name] for m in loaded), loaded


def _private_uses(path: Path) -> list[str]:
  """Underscore names of other adamix_jax modules that a file uses: imported by name
  (`from adamix_jax.x import _y`) or read off an imported module (`x._y`)."""
  tree = ast.parse(path.read_text())
  modules, uses = set(), []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
        'adamix_jax'):
      for alias in node.names:
        if alias.name.startswith('_') and not alias.name.startswith('__'):
          uses.append(f'{node.module}.{alias.name}')
        modules.add(alias.asname or alias.name)
    elif isinstance(node, ast.Import):
      modules |= {a.asname for a in node.names if a.name.startswith('adamix_jax') and a.asname}
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in modules and node.attr.startswith('_')
        and not node.attr.startswith('__')):
      uses.append(f'{node.value.id}.{node.attr}')
  return uses


def test_no_module_uses_another_modules_private_names():
  found = [f'{p.relative_to(ROOT)}: {use}' for p in sorted(PACKAGE.rglob('*.py'))
           for use in _private_uses(p)]
  assert not found, '\n'.join(found)


def test_the_private_name_checker_sees_both_forms(tmp_path):
  module = tmp_path / 'x.py'
  module.write_text('from adamix_jax.data import formats\nfrom adamix_jax.data.tasks import _key\n'
                    'formats._lines("")\n')
  assert sorted(_private_uses(module)) == ['adamix_jax.data.tasks._key', 'formats._lines']


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
