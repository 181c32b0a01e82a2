"""Checkpoints of a run: orbax managers of the train state, the data iterator's state and
the run's metadata; saving, restoring, and the check that a workdir's checkpoint belongs to
the run about to resume it."""

from __future__ import annotations

from typing import Any

from etils import epath
import ml_collections
import orbax.checkpoint as ocp

from adamix_jax.adapters import AdaptationConfig
from adamix_jax.data.tasks import TaskSpec
from adamix_jax.hf_checkpoint import CheckpointError


def checkpoint_manager(path: epath.Path, max_to_keep: int, *, asynchronous: bool = True
                       ) -> ocp.CheckpointManager:
  """A manager of `path` (created if missing) whose checkpoints hold the train state, the
  data iterator's state and the run's metadata."""
  return ocp.CheckpointManager(
      path.absolute(), item_names=('state', 'data', 'meta'),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=asynchronous))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict,
         meta: dict) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
      meta=ocp.args.JsonSave(meta)), force=True)


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            step: int | None = None) -> tuple[Any, dict, dict]:
  """The train state (shaped like `abstract_state`), data state and metadata of a step (the
  latest by default)."""
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
      meta=ocp.args.JsonRestore()))
  return restored['state'], restored['data'], restored['meta']


def read_meta(manager: ocp.CheckpointManager) -> dict | None:
  """The metadata of the latest checkpoint, None when there is none."""
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def run_meta(config: ml_collections.ConfigDict, run_task: TaskSpec,
             adaptation: AdaptationConfig) -> dict[str, Any]:
  """What a workdir's checkpoint must agree with to be resumed."""
  return {
      'checkpoint': str(config.model.checkpoint),
      'peft_adapter': str(config.model.peft_adapter),
      'method': config.method,
      'adaptation': adaptation.to_json(),
      'task': run_task.name,
      'num_labels': run_task.num_labels,
      # The optimizer state's layout depends on it.
      'expert_updates': config.get('expert_updates', 'official'),
  }


# Metadata written before a field existed: the value those runs had.
LEGACY_META = {'expert_updates': 'frozen'}


def check_meta(saved: dict[str, Any], current: dict[str, Any], where: epath.Path) -> None:
  """Refuses to resume a checkpoint whose run differs from the current one in `current`'s
  fields."""
  saved = {k: saved.get(k, LEGACY_META.get(k)) for k in current}
  diffs = [f'{k}: checkpoint has {saved.get(k)!r}, config has {v!r}'
           for k, v in current.items() if saved.get(k) != v]
  if diffs:
    raise CheckpointError(
        f'The checkpoint in {where} was made by a different run and cannot be resumed: ' +
        '; '.join(diffs) + '. Use another --workdir (nothing was overwritten).')
