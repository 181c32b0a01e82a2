"""Multi-host start-up: `jax.distributed.initialize()` when the environment asks for it."""

from __future__ import annotations

import os

import jax
from absl import logging


def initialize_from_environment() -> bool:
  """Initialises JAX's multi-controller runtime on a TPU pod, SLURM, or explicit env vars.

  Explicit: JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES, JAX_PROCESS_ID.
  TPU pod slices and SLURM jobs are detected by JAX itself when ADAMIX_DISTRIBUTED=1 (or
  the TPU worker environment) is present. Returns whether initialisation happened.
  """
  address = os.environ.get('JAX_COORDINATOR_ADDRESS')
  if address and os.environ.get('JAX_PLATFORMS', '') == 'cpu':
    # CPU processes need a collectives backend for cross-process reductions.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if address:
    jax.distributed.initialize(address, num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                               process_id=int(os.environ['JAX_PROCESS_ID']))
  elif os.environ.get('ADAMIX_DISTRIBUTED') == '1' or 'TPU_WORKER_HOSTNAMES' in os.environ \
      or 'SLURM_JOB_ID' in os.environ and int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    jax.distributed.initialize()
  else:
    return False
  logging.info('JAX distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True
