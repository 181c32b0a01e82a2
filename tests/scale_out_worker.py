"""Trains the tiny config under given mesh layouts and prints losses and parameters as JSON.

Run as a subprocess so that XLA_FLAGS (fake CPU devices) and jax.distributed take effect
before jax is imported:
  python tests/scale_out_worker.py CHECKPOINT OUT.json WORKROOT LAYOUT [LAYOUT ...]
where LAYOUT is 'data,fsdp' (e.g. '1,1', '8,1', '1,8', '2,4').
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adamix_jax import distributed  # noqa: E402

distributed.initialize_from_environment()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from adamix_jax import checkpoints, runs, train  # noqa: E402
from configs import tiny  # noqa: E402


def small_sst2(root: Path) -> Path:
  """64 training and 40 dev sentences of the bundled SST-2 sample, in the GLUE layout."""
  from adamix_jax.data import SAMPLES_DIR  # pylint: disable=import-outside-toplevel
  out = root / 'glue' / 'SST-2'
  out.mkdir(parents=True, exist_ok=True)
  for name, rows in (('train.tsv', 64), ('dev.tsv', 40)):
    lines = (SAMPLES_DIR / 'SST-2' / name).read_text().splitlines(keepends=True)
    (out / name).write_text(''.join(lines[:rows + 1]))  # + header
  return out.parent


def run(checkpoint: str, workdir: Path, data: int, fsdp: int) -> dict:
  config = tiny.get_config()
  config.model.checkpoint = checkpoint
  config.data.data_dir = str(small_sst2(workdir.parent))
  # Shard the tiny model's kernels too (the default threshold keeps small leaves whole).
  config.mesh.fsdp_min_size = 1024
  config.method = os.environ.get('SCALE_OUT_METHOD', 'adamix')
  config.mesh.data, config.mesh.fsdp = data, fsdp
  config.export = True  # every process takes part in the export; the first one writes it
  # Three logged steps, one evaluation and one checkpoint at the end, one padded shape: each
  # layout compiles one train step and one evaluation.
  config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
  config.log_every_steps = 1
  config.data.bucket_size = config.data.max_length
  captured = {}
  original = runs.build_run

  def build_run(cfg, wd):
    run_, trainable = original(cfg, wd)
    captured['run'] = run_
    return run_, trainable

  runs.build_run = build_run
  try:
    results = train.train_and_evaluate(config, workdir)
  finally:
    runs.build_run = original
  run_ = captured['run']
  losses = [json.loads(l)['train/loss'] for l in (workdir / 'metrics.jsonl').read_text()
            .splitlines() if 'train/loss' in l] if (workdir / 'metrics.jsonl').exists() else []
  # Final trainable parameters, from the last checkpoint.
  manager = checkpoints.checkpoint_manager(workdir / 'checkpoints', 2)
  step = manager.latest_step()
  replicated = jax.sharding.NamedSharding(run_.mesh, jax.sharding.PartitionSpec())
  metadata = manager.item_metadata(step)['state']
  abstract = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated), metadata)
  restored = manager.restore(step, args=train.ocp.args.Composite(
      state=train.ocp.args.StandardRestore(abstract)))['state']
  params = {'/'.join(k): np.asarray(v.addressable_data(0)).tolist() for k, v in traverse_util.flatten_dict(
      restored['params']).items()}
  shards = {'/'.join(k): [[None if a is None else str(a) for a in v.sharding.spec],
                             list(v.addressable_shards[0].data.shape)]
            for k, v in traverse_util.flatten_dict(run_.frozen).items()}
  # The exported tensors, by their norms (the first process wrote them).
  exported = {}
  if jax.process_index() == 0:
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    exported = {k: float(np.linalg.norm(v)) for k, v in
                load_file(str(workdir / 'export' / 'adapter.safetensors')).items()}
  return {'losses': losses, 'params': params, 'frozen_shards': shards, 'export': exported,
          'metrics': results['final']['metrics'], 'devices': jax.device_count(),
          'processes': jax.process_count()}


def main():
  checkpoint, out, root, *layouts = sys.argv[1:]
  results = {}
  for layout in layouts:
    data, fsdp = (int(x) for x in layout.split(','))
    results[layout] = run(checkpoint, Path(root) / layout.replace(',', 'x'), data, fsdp)
  if jax.process_index() == 0:
    Path(out).write_text(json.dumps(results))


if __name__ == '__main__':
  main()
