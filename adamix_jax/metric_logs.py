"""metrics.jsonl: every logged scalar of a run, one JSON line per step."""

from __future__ import annotations

import json

from etils import epath


class JsonlWriter:
  """Every logged scalar as one JSON line: {"step": s, "name": value, ...}."""

  def __init__(self, path: epath.Path, active: bool):
    self.path, self.active = path, active

  def truncate_after(self, step: int) -> None:
    """Drops lines of steps a resumed run will log again."""
    if not (self.active and self.path.exists()):
      return
    kept = [line for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line)['step'] <= step]
    self.path.write_text(''.join(line + '\n' for line in kept))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self.active:
      with self.path.open('a') as f:
        f.write(json.dumps({'step': int(step), **{k: float(v) for k, v in scalars.items()}})
                + '\n')
