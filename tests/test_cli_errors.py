"""Bad inputs to the command-line programs: each ends with a non-zero exit and one line
naming the culprit, no traceback, before any work is spent, and leaves an existing run's
files byte-identical.

One tiny run is trained once (the first case of `experiments.main`); every bad input then
points at it or beside it. Each program runs all its cases in one process
(tests/cli_errors_worker.py), so JAX is imported once per program; a few cases also run as
real subprocesses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from conftest import xla_flags

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name('cli_errors_worker.py')
SST2 = REPO / 'adamix_jax' / 'data' / 'samples' / 'glue' / 'SST-2'
DEVICES = 2  # fake CPU devices: batch sizes must divide by 2

# The finished run's settings (configs/tiny.py and these); the bad inputs of
# experiments.main start from the same command line.
RUN_ARGS = ['--config=configs/tiny.py', '--workdir={RUN}', '--config.model.checkpoint={CKPT}',
            '--config.data.data_dir={GLUE}', '--config.num_train_steps=2',
            '--config.eval_every_steps=2', '--config.consistency_weight=0']
FLAG_ERROR = 'FATAL Flags parsing error: '

# (id, extra arguments, what the message must name). Arguments are appended to RUN_ARGS
# (later flags win); {NAME} is a path of the `setup` fixture.
MAIN_CASES = [
    ('lr_negative', ['--config.learning_rate=-1'], ['config.learning_rate=-1']),
    ('lr_nan', ['--config.learning_rate=nan'], ['config.learning_rate=nan']),
    ('lr_inf', ['--config.learning_rate=inf'], ['config.learning_rate=inf']),
    ('weight_decay', ['--config.weight_decay=-0.1'], ['config.weight_decay=-0.1']),
    ('grad_clip', ['--config.grad_clip_norm=-1'], ['config.grad_clip_norm=-1']),
    ('consistency', ['--config.consistency_weight=-2'], ['config.consistency_weight=-2']),
    ('adam_b1', ['--config.adam_b1=1.0'], ['config.adam_b1=1.0']),
    ('adam_b2', ['--config.adam_b2=-0.5'], ['config.adam_b2=-0.5']),
    ('adam_eps', ['--config.adam_eps=0'], ['config.adam_eps=0']),
    ('warmup', ['--config.warmup_ratio=1.5'], ['config.warmup_ratio=1.5']),
    ('eval_expert', ['--config.eval_mode=expert', '--config.eval_expert=3'],
     ['config.eval_expert=3', 'num_experts=3']),
    ('eval_mode', ['--config.eval_mode=vote'], ['config.eval_mode=', 'vote']),
    ('method', ['--config.method=prefix'], ['config.method=', 'prefix']),
    ('batch_zero', ['--config.batch_size=0'], ['config.batch_size=0']),
    ('eval_batch_negative', ['--config.eval_batch_size=-8'], ['config.eval_batch_size=-8']),
    ('batch_not_divisible', ['--config.batch_size=7'], ['config.batch_size=7', '2 devices']),
    ('fsdp_devices', ['--config.mesh.fsdp=3'], ['config.mesh.fsdp=3']),
    ('experts_zero', ['--config.adapter.num_experts=0'], ['config.adapter.num_experts=0']),
    ('adapter_size_zero', ['--config.adapter.adapter_size=0'],
     ['config.adapter.adapter_size=0']),
    ('adapter_size_vs_hidden', ['--config.adapter.adapter_size=100'],
     ['config.adapter.adapter_size=100', 'hidden size 32']),
    ('max_length_zero', ['--config.data.max_length=0'], ['config.data.max_length=0']),
    ('max_length_vs_positions', ['--config.data.max_length=1000'],
     ['config.data.max_length=1000', 'max_position_embeddings']),
    ('head', ['--config.model.head=regressor'], ['config.model.head=', 'regressor']),
    ('pooling', ['--config.model.pooling=max'], ['config.model.pooling=', 'max']),
    ('dtype', ['--config.model.dtype=float64'], ['config.model.dtype=', 'float64']),
    ('placement', ['--config.adapter.placement=middle'], ['config.adapter.placement=',
                                                          'middle']),
    ('activation', ['--config.adapter.adapter_activation=sine'],
     ['config.adapter.adapter_activation=', 'sine']),
    ('lora_rank', ['--config.method=lora', '--config.adapter.lora_rank=0'],
     ['config.adapter.lora_rank=0']),
    ('lora_dropout', ['--config.method=lora', '--config.adapter.lora_dropout=1.0'],
     ['config.adapter.lora_dropout=1.0']),
    ('no_length', ['--config.num_train_steps=0', '--config.num_epochs=0'],
     ['config.num_epochs', 'config.num_train_steps']),
    ('log_every', ['--config.log_every_steps=0'], ['config.log_every_steps=0']),
    ('keep_checkpoints', ['--config.max_checkpoints_to_keep=0'],
     ['config.max_checkpoints_to_keep=0']),
    ('seed_negative', ['--config.seed=-1'], ['config.seed=-1']),
    ('merge', ['--config.merge=median'], ['config.merge=', 'median']),
    ('expert_updates', ['--config.expert_updates=sometimes'],
     ['config.expert_updates=', 'sometimes']),
    ('head_only_prompt', ['--config.method=head_only', '--config.model.head=prompt'],
     ['head_only', 'head=prompt']),
    ('int_field_type', ['--config.batch_size=eight'], [FLAG_ERROR, 'eight']),
    ('unknown_field', ['--config.learning_rat=0.1'], ['unknown config field', 'learning_rat']),
    ('config_file_missing', ['--config=configs/nope.py'], ['configs/nope.py']),
    ('stray_argument', ['train'], ['Unexpected arguments', 'train']),
    ('checkpoint_missing', ['--config.model.checkpoint={TMP}/no_such_model'],
     ['{TMP}/no_such_model']),
    ('checkpoint_no_config', ['--config.model.checkpoint={BAD_CKPT_EMPTY}'],
     ['{BAD_CKPT_EMPTY}', 'config.json']),
    ('checkpoint_config_not_json', ['--config.model.checkpoint={BAD_CKPT_JSON}'],
     ['{BAD_CKPT_JSON}/config.json', 'not valid JSON']),
    ('checkpoint_truncated', ['--config.model.checkpoint={BAD_CKPT_TRUNC}'],
     ['{BAD_CKPT_TRUNC}/model.safetensors', 'truncated']),
    ('checkpoint_header_garbage', ['--config.model.checkpoint={BAD_CKPT_HEADER}'],
     ['{BAD_CKPT_HEADER}/model.safetensors', 'not a readable safetensors file']),
    ('checkpoint_shape_vs_config', ['--config.model.checkpoint={BAD_CKPT_SHAPE}'],
     ['{BAD_CKPT_SHAPE}/model.safetensors', 'intermediate.dense', '[37', '[40']),
    ('checkpoint_layers_vs_config', ['--config.model.checkpoint={BAD_CKPT_LAYERS}'],
     ['{BAD_CKPT_LAYERS}/model.safetensors', 'layer 1', 'num_hidden_layers=1']),
    ('checkpoint_no_weights', ['--config.model.checkpoint={BAD_CKPT_NOWEIGHTS}'],
     ['{BAD_CKPT_NOWEIGHTS}', 'model.safetensors']),
    ('workdir_is_file', ['--workdir={TMP}/a_file'], ['--workdir={TMP}/a_file', 'is a file']),
    ('workdir_under_file', ['--workdir={TMP}/a_file/run'], ['{TMP}/a_file', 'is a file']),
    ('workdir_checkpoints_is_file', ['--workdir={BAD_WORKDIR}'],
     ['{BAD_WORKDIR}/checkpoints', 'is a file']),
    ('data_dir_missing', ['--config.data.data_dir={TMP}/no_glue'], ['{TMP}/no_glue']),
    ('dev_split_missing', ['--config.data.data_dir={GLUE_NO_DEV}'],
     ['{GLUE_NO_DEV}/SST-2/dev.tsv']),
    ('label_not_in_label_set', ['--config.data.data_dir={GLUE_BAD_LABEL}'],
     ['{GLUE_BAD_LABEL}/SST-2/train.tsv:6', 'maybe']),
    ('task_unknown', ['--config.data.task=sentiment'], ['config.data', 'sentiment']),
    ('source_unknown', ['--config.data.source=parquet'], ['config.data', 'parquet']),
    # A new workdir beside the finished run: refused before it is created.
    ('new_workdir_bad_rows', ['--workdir={ROOT}/sst2/adamix/seed_9',
                              '--config.data.data_dir={GLUE_BAD_LABEL}'],
     ['{GLUE_BAD_LABEL}/SST-2/train.tsv:6']),
    ('new_workdir_checkpoint_shapes', ['--workdir={ROOT}/sst2/lora/seed_0', '--config.method=lora',
                                       '--config.model.checkpoint={BAD_CKPT_SHAPE}'],
     ['{BAD_CKPT_SHAPE}/model.safetensors']),
    ('foreign_checkpoint', ['--config.method=adapter'],
     ['{RUN}/checkpoints', "method: checkpoint has 'adamix', config has 'adapter'"]),
]

PREDICT_CASES = [
    ('export_missing', ['--export={TMP}/no_export', '--input={GLUE}/SST-2/dev.tsv',
                        '--output={TMP}/p.tsv'], ['{TMP}/no_export']),
    ('input_missing', ['--export={RUN}/export', '--input={TMP}/no_input.tsv',
                       '--output={TMP}/p.tsv'], ['{TMP}/no_input.tsv']),
    ('text_column_missing', ['--export={RUN}/export', '--input={TMP}/other_columns.tsv',
                             '--output={TMP}/p.tsv'], ['{TMP}/other_columns.tsv', 'sentence']),
    ('label_column_missing', ['--export={RUN}/export', '--input={TMP}/other_columns.tsv',
                              '--output={TMP}/p.tsv', '--text_columns=text',
                              '--label_column=gold'], ['{TMP}/other_columns.tsv', 'gold']),
    ('required_flag', ['--export={RUN}/export', '--output={TMP}/p.tsv'],
     [FLAG_ERROR, 'input']),
]

EXPORT_CASES = [
    ('format_for_method', ['--workdir={RUN}', '--format=peft', '--out={TMP}/peft'],
     ['adamix']),
    ('export_missing', ['--export={TMP}/no_export', '--format=hf', '--out={TMP}/hf'],
     ['{TMP}/no_export']),
    ('export_tensors_truncated', ['--export={BAD_EXPORT}', '--format=adapters',
                                  '--out={TMP}/adapters'], ['{BAD_EXPORT}/', 'safetensors']),
    ('format_unknown', ['--workdir={RUN}', '--format=onnx', '--out={TMP}/x'],
     [FLAG_ERROR, 'onnx']),
    ('workdir_and_export', ['--workdir={RUN}', '--export={RUN}/export', '--format=hf',
                            '--out={TMP}/x'], [FLAG_ERROR, 'workdir', 'export']),
]

SWEEP_ARGS = ['--config=configs/tiny.py', '--workdir={ROOT}', '--config.model.checkpoint={CKPT}',
              '--config.data.data_dir={GLUE}', '--config.num_train_steps=2',
              '--config.eval_every_steps=2', '--config.consistency_weight=0']
SWEEP_CASES = [
    ('lr_negative', ['--config.learning_rate=-1'], ['config.learning_rate=-1']),
    ('method_unknown', ['--methods=adamix,prefix'], ['prefix']),
    ('seed_not_integer', ['--seeds=1,two'], ['--seeds', 'two']),
    ('task_repeated', ['--tasks=sst2,sst2'], ['--tasks', 'sst2']),
    ('run_field_override', ['--config.seed=3'], ['--config.seed', '--seeds']),
    ('checkpoint_missing', ['--config.model.checkpoint={TMP}/no_such_model'],
     ['sst2 / adamix / seed 0', '{TMP}/no_such_model']),
    ('dev_split_missing', ['--config.data.data_dir={GLUE_NO_DEV}'],
     ['{GLUE_NO_DEV}/SST-2/dev.tsv']),
    ('stale_run', ['--config.learning_rate=0.5'],
     ['{RUN}', 'learning_rate', '0.5']),
    ('batch_not_divisible', ['--config.batch_size=7'], ['config.batch_size=7']),
]

FEWSHOT_ARGS = ['--workdir={ROOT}', '--override=model.checkpoint={CKPT}', '--tasks=sst2',
                '--methods=adapter', '--seeds=1']
FEWSHOT_CASES = [
    ('task_unknown', ['--tasks=imdb'], ['imdb']),
    ('seed_not_integer', ['--seeds=x'], ['--seeds', 'x']),
    ('override_not_field_value', ['--override=learning_rate'], ['learning_rate']),
    ('override_unknown_field', ['--override=learning_rat=0.1'], ['learning_rat']),
    ('override_lr_negative', ['--override=learning_rate=-0.5'],
     ['config.learning_rate=-0.5']),
    ('method_override_malformed', ['--method_override=adapter'],
     ['--method_override', 'adapter']),
    ('data_dir_missing', ['--data_dir={TMP}/no_fewshot'], ['{TMP}/no_fewshot']),
    ('checkpoint_missing', ['--override=model.checkpoint={TMP}/no_such_model'],
     ['{TMP}/no_such_model']),
]

PROGRAMS = {  # module: (common arguments, cases)
    'experiments.main': (RUN_ARGS, MAIN_CASES),
    'experiments.predict': ([], PREDICT_CASES),
    'experiments.export': ([], EXPORT_CASES),
    'experiments.sweep': (SWEEP_ARGS, SWEEP_CASES),
    'experiments.fewshot': (FEWSHOT_ARGS, FEWSHOT_CASES),
}
ALL_CASES = [(module, case) for module, (_, cases) in PROGRAMS.items() for case in cases]


def _fill(texts, paths):
  return [t.format(**paths) for t in texts]


def _env():
  env = dict(os.environ)
  env['XLA_FLAGS'] = xla_flags(f'--xla_force_host_platform_device_count={DEVICES}')
  env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
  env.pop('ADAMIX_JAX_TRACEBACK', None)
  return env


def _glue(path: Path, train_rows: int = 32, dev_rows: int = 16, bad_label: bool = False,
          dev: bool = True) -> Path:
  (path / 'SST-2').mkdir(parents=True)
  for split, rows in (('train', train_rows), ('dev', dev_rows)):
    if split == 'dev' and not dev:
      continue
    lines = (SST2 / f'{split}.tsv').read_text().splitlines()[:rows + 1]
    if bad_label and split == 'train':
      lines[5] = lines[5].rsplit('\t', 1)[0] + '\tmaybe'
    (path / 'SST-2' / f'{split}.tsv').write_text('\n'.join(lines) + '\n')
  return path


def _bad_checkpoints(good: Path, tmp: Path) -> dict[str, str]:
  """Copies of the tiny checkpoint, each broken in one way."""
  paths = {}

  def copy(name):
    path = tmp / name
    shutil.copytree(good, path)
    paths[name.upper()] = str(path)
    return path

  empty = tmp / 'bad_ckpt_empty'
  empty.mkdir()
  paths['BAD_CKPT_EMPTY'] = str(empty)
  (copy('bad_ckpt_json') / 'config.json').write_text('{"model_type": "bert",')
  weights = copy('bad_ckpt_trunc') / 'model.safetensors'
  weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
  weights = copy('bad_ckpt_header') / 'model.safetensors'
  weights.write_bytes((1000).to_bytes(8, 'little') + b'{"not json' + weights.read_bytes()[18:])
  for name, field, value in (('bad_ckpt_shape', 'intermediate_size', 40),
                             ('bad_ckpt_layers', 'num_hidden_layers', 1)):
    path = copy(name)
    config = json.loads((path / 'config.json').read_text())
    config[field] = value
    (path / 'config.json').write_text(json.dumps(config))
  (copy('bad_ckpt_noweights') / 'model.safetensors').unlink()
  return paths


@pytest.fixture(scope='module')
def setup(tiny_checkpoint, tmp_path_factory):
  """The paths the cases name: ROOT (the watched runs root) holding RUN, the finished run;
  TMP with the broken inputs beside it."""
  tmp = tmp_path_factory.mktemp('cli_errors')
  paths = {'ROOT': str(tmp / 'runs'), 'RUN': str(tmp / 'runs' / 'sst2' / 'adamix' / 'seed_0'),
           'CKPT': str(tiny_checkpoint), 'TMP': str(tmp / 'bad')}
  bad = tmp / 'bad'
  bad.mkdir()
  paths['GLUE'] = str(_glue(tmp / 'glue'))
  paths['GLUE_NO_DEV'] = str(_glue(bad / 'glue_no_dev', dev=False))
  paths['GLUE_BAD_LABEL'] = str(_glue(bad / 'glue_bad_label', bad_label=True))
  paths.update(_bad_checkpoints(Path(tiny_checkpoint), bad))
  (bad / 'a_file').write_text('not a directory\n')
  (bad / 'workdir' / 'checkpoints').parent.mkdir()
  (bad / 'workdir' / 'checkpoints').write_text('not a directory\n')
  paths['BAD_WORKDIR'] = str(bad / 'workdir')
  (bad / 'other_columns.tsv').write_text('text\tlabel\na fine film\t1\n')
  return paths


def _start_program(module: str, argv_lists: list[list[str]], paths: dict, tmp: Path):
  """Starts the worker running `module` on every argv; `_results` waits for it."""
  cases_file, out_file = tmp / f'{module}.cases.json', tmp / f'{module}.out.json'
  cases_file.write_text(json.dumps(argv_lists))
  log = open(tmp / f'{module}.log', 'w+')  # pylint: disable=consider-using-with
  proc = subprocess.Popen([sys.executable, str(WORKER), module, str(cases_file),
                           str(out_file), paths['ROOT']], cwd=REPO, env=_env(),
                          stdout=log, stderr=subprocess.STDOUT)
  return proc, out_file, log


def _results(started) -> list:
  proc, out_file, log = started
  try:
    code = proc.wait(timeout=900)
  finally:
    proc.kill()
  log.seek(0)
  assert code == 0, log.read()[-3000:]
  log.close()
  return json.loads(out_file.read_text())


@pytest.fixture(scope='module')
def outcomes(setup, tmp_path_factory):
  """{(module, case id): what the program did}, and the finished run's digest. The first
  run of experiments.main trains the finished run every other case must leave alone."""
  tmp = tmp_path_factory.mktemp('cli_errors_out')
  found = {}
  main_runs = _results(_start_program(
      'experiments.main',
      [_fill(RUN_ARGS, setup)] + [_fill(RUN_ARGS + extra, setup) for _, extra, _ in MAIN_CASES],
      setup, tmp))
  trained, main_runs = main_runs[0], main_runs[1:]
  assert trained['code'] == 0, trained
  assert (Path(setup['RUN']) / 'results.json').is_file()
  assert (Path(setup['RUN']) / 'export').is_dir()
  # An export with half its tensor file, beside the run.
  bad_export = Path(setup['TMP']) / 'bad_export'
  shutil.copytree(Path(setup['RUN']) / 'export', bad_export)
  for tensors in bad_export.glob('*.safetensors'):
    tensors.write_bytes(tensors.read_bytes()[:tensors.stat().st_size // 2])
  setup['BAD_EXPORT'] = str(bad_export)
  found.update({('experiments.main', cid): r for (cid, _, _), r in zip(MAIN_CASES, main_runs)})
  others = {module: _start_program(module, [_fill(common + extra, setup)
                                            for _, extra, _ in cases], setup, tmp)
            for module, (common, cases) in PROGRAMS.items() if module != 'experiments.main'}
  for module, started in others.items():  # side by side: they only read
    found.update({(module, cid): r
                  for (cid, _, _), r in zip(PROGRAMS[module][1], _results(started))})
  return found, trained['digest']


def test_enough_distinct_bad_inputs():
  assert len(ALL_CASES) >= 40
  assert len({(m, tuple(args)) for m, (_, args, _) in ALL_CASES}) == len(ALL_CASES)


@pytest.mark.parametrize('module,case', ALL_CASES,
                         ids=[f'{m.split(".")[1]}-{c[0]}' for m, c in ALL_CASES])
def test_bad_input_is_refused_with_one_line_naming_it(module, case, outcomes, setup):
  found, digest = outcomes
  case_id, _, culprits = case
  r = found[(module, case_id)]
  shown = r['stderr'] + '\n'.join(r['log'])
  assert r['traceback'] is None, r['traceback']
  assert 'Traceback' not in shown, shown
  assert r['code'] not in (0, None), r
  lines = [line for line in r['stderr'].splitlines()
           if line.strip() and not line.startswith('Pass --helpshort or --helpfull')]
  assert len(lines) == 1, r['stderr']
  assert lines[0].startswith(('error: ', FLAG_ERROR)), lines[0]
  for culprit in _fill(culprits, setup):
    assert culprit in lines[0], (culprit, lines[0])
  assert r['digest'] == digest, 'the finished run\'s files changed'


def test_exit_status_and_message_end_to_end(setup, outcomes):
  """As a real program: exit status 1, the one line, no traceback; --verbosity=1 and
  ADAMIX_JAX_TRACEBACK=1 show the traceback."""
  _, digest = outcomes
  argv = [sys.executable, '-m', 'experiments.main', *_fill(RUN_ARGS, setup),
          '--config.learning_rate=-1']
  quiet = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=300, check=False)
  assert quiet.returncode == 1
  assert quiet.stderr.strip() == ('error: config.learning_rate=-1.0 must be a finite number '
                                  '> 0'), quiet.stderr
  for extra, env in (([], {'ADAMIX_JAX_TRACEBACK': '1'}), (['--verbosity=1'], {})):
    loud = subprocess.run(argv + extra, cwd=REPO, env={**_env(), **env}, capture_output=True,
                          text=True, timeout=300, check=False)
    assert loud.returncode != 0
    assert 'Traceback' in loud.stderr, (extra, env, loud.stderr[-2000:])
    assert 'ConfigError: config.learning_rate' in loud.stderr
  sys.path.insert(0, str(WORKER.parent))
  from cli_errors_worker import tree_digest  # pylint: disable=import-outside-toplevel
  assert tree_digest(setup['ROOT']) == digest
