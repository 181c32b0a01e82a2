"""Data parallel and FSDP layouts, and two processes, give the single-device result."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import xla_flags

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / 'tests' / 'scale_out_worker.py'
RTOL = 1e-5


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COORDINATOR')}
  env.update(JAX_PLATFORMS='cpu', **extra)
  return env


def _assert_same(reference: dict, other: dict, what: str):
  """Losses within RTOL elementwise; the final trainable parameters within RTOL relative
  (global norm over all of them), and each leaf within 10 x RTOL.

  A leaf near zero (a bias) can differ more than the whole: layouts reduce the gradient in a
  different order, and Adam's normalisation amplifies differences of ~1e-9 in gradient
  elements that are themselves near zero.
  """
  np.testing.assert_allclose(other['losses'], reference['losses'], rtol=RTOL, err_msg=what)
  assert other['params'].keys() == reference['params'].keys()
  diff2 = ref2 = 0.0
  for key, value in reference['params'].items():
    a, b = np.asarray(other['params'][key]), np.asarray(value)
    diff2 += float(np.sum((a - b) ** 2))
    ref2 += float(np.sum(b ** 2))
    rel = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
    assert rel <= 10 * RTOL, f'{what}: {key} differs by {rel:.2e} (relative norm)'
  assert (diff2 / ref2) ** 0.5 <= RTOL, f'{what}: parameters differ by {(diff2 / ref2) ** 0.5}'
  assert other['metrics'] == pytest.approx(reference['metrics'], abs=1e-6), what
  # The export (best checkpoint, experts merged): written once, the same tensors.
  assert other['export'].keys() == reference['export'].keys() and reference['export'], what
  for key, norm in reference['export'].items():
    assert other['export'][key] == pytest.approx(norm, rel=10 * RTOL), f'{what}: {key}'


@pytest.fixture(scope='module')
def eight_device_runs(tiny_checkpoint, tmp_path_factory):
  root = tmp_path_factory.mktemp('layouts')
  out = root / 'out.json'
  subprocess.run([sys.executable, str(WORKER), str(tiny_checkpoint), str(out), str(root),
                  '1,1', '8,1', '1,8', '2,4'], check=True, cwd=ROOT,
                 env=_env(XLA_FLAGS=xla_flags('--xla_force_host_platform_device_count=8')),
                 capture_output=True)
  return json.loads(out.read_text())


def test_eight_devices_data_parallel_equals_one_device(eight_device_runs):
  runs = eight_device_runs
  assert runs['8,1']['devices'] == 8
  assert len(runs['1,1']['losses']) == 3
  _assert_same(runs['1,1'], runs['8,1'], 'data=8')


@pytest.mark.parametrize('layout', ['1,8', '2,4'])
def test_fsdp_equals_replicated_and_shards_frozen_kernels(eight_device_runs, layout):
  runs = eight_device_runs
  _assert_same(runs['1,1'], runs[layout], f'layout {layout}')
  fsdp = int(layout.split(',')[1])
  shards = runs[layout]['frozen_shards']
  # The word embeddings [30522, 32]: 30522 is not a multiple of 4 or 8, so the hidden axis
  # is split.
  assert shards['backbone/embeddings/word_embeddings/embedding'] == [
      [None, 'fsdp'], [30522, 32 // fsdp]]
  # The FFN kernel [32, 37]: only 32 divides.
  assert shards['backbone/layer_0/intermediate_dense/kernel'] == [['fsdp', None],
                                                                   [32 // fsdp, 37]]
  # Small leaves (LayerNorms, biases) stay whole.
  assert shards['backbone/layer_0/output/LayerNorm/scale'] == [[], [32]]
  replicated = runs['1,1']['frozen_shards']['backbone/layer_0/intermediate_dense/kernel']
  assert replicated == [[], [32, 37]]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(tiny_checkpoint, tmp_path, eight_device_runs):
  port = _free_port()
  out = tmp_path / 'out.json'
  procs = [subprocess.Popen(
      [sys.executable, str(WORKER), str(tiny_checkpoint), str(out), str(tmp_path), '2,1'],
      cwd=ROOT, env=_env(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2',
                         JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  logs = [p.communicate(timeout=600)[0].decode(errors='replace') for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  result = json.loads(out.read_text())['2,1']
  assert result['processes'] == 2 and result['devices'] == 2
  _assert_same(eight_device_runs['1,1'], result, 'two processes')
