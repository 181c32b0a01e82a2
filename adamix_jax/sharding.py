"""Where arrays live: the ('data', 'fsdp') device mesh, FSDP layouts of parameter trees,
batches split over the mesh, and gathering to the host."""

from __future__ import annotations

from typing import Any

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from adamix_jax.config_fields import ConfigError
from adamix_jax.data import pipeline


BATCH_AXES = ('data', 'fsdp')


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
  """A ('data', 'fsdp') device mesh; the batch is split over both axes."""
  devices = jax.devices()
  fsdp = int(config.mesh.fsdp)
  if fsdp < 1 or len(devices) % fsdp:
    raise ConfigError(f'config.mesh.fsdp={fsdp} must be >= 1 and divide the '
                      f'{len(devices)} devices')
  data = int(config.mesh.data) if config.mesh.data > 0 else len(devices) // fsdp
  if data * fsdp > len(devices):
    raise ConfigError(f'config.mesh.data={data} x config.mesh.fsdp={fsdp} needs '
                      f'{data * fsdp} devices; {len(devices)} are visible')
  return Mesh(np.asarray(devices[:data * fsdp]).reshape(data, fsdp), BATCH_AXES)


def leaf_sharding(shape: tuple[int, ...], mesh: Mesh, min_size: int) -> NamedSharding:
  """FSDP: a leaf of at least `min_size` elements is split over 'fsdp' along its largest
  divisible dimension; everything else (and everything when fsdp == 1) is replicated."""
  n = mesh.shape['fsdp']
  if n == 1 or len(shape) < 2 or int(np.prod(shape)) < min_size:
    return NamedSharding(mesh, P())
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = 'fsdp'
      return NamedSharding(mesh, P(*spec))
  return NamedSharding(mesh, P())


def tree_shardings(tree: Any, mesh: Mesh, min_size: int) -> Any:
  """`leaf_sharding` of every leaf."""
  return jax.tree_util.tree_map(lambda x: leaf_sharding(np.shape(x), mesh, min_size), tree)


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """A host batch as global arrays split over the mesh's batch axes."""
  return pipeline.shard_batch(batch, mesh, BATCH_AXES)


def to_host(tree: Any) -> Any:
  """Numpy copies of every leaf, gathering those spread over several processes (a
  collective there: every process calls it with the same tree)."""
  def leaf(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree_util.tree_map(leaf, tree)
