"""What a step benchmark reads off a program besides its time: XLA's FLOP count and memory
analysis, the dots of the optimised HLO, and the weight gradients its jaxpr takes.

`frozen_grad_dots` checks that a step computes no weight gradient of a frozen kernel: it
counts dot_generals in the step's jaxpr, beyond the forward's, whose output has a frozen
kernel's shape (and no trainable kernel's).
"""

from __future__ import annotations

import re
from typing import Any

from flax import traverse_util

KERNELS = ('kernel', 'down_kernel', 'up_kernel', 'lora_a', 'lora_b')
_DOT = re.compile(r'= f32\[([\d,]*)\]\S* dot\(')


def flops(program: Any) -> float:
  """XLA's FLOP count of a lowered or compiled program (NaN where XLA gives none)."""
  cost = program.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def peak_bytes(compiled: Any) -> int | float:
  """Bytes one execution needs: arguments + temporaries + outputs not aliased to donated
  inputs (XLA's memory analysis; NaN where the backend gives none)."""
  m = compiled.memory_analysis()
  if m is None:
    return float('nan')
  return int(m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes -
             m.alias_size_in_bytes)


def dot_shapes(compiled: Any) -> list[tuple[int, ...]]:
  """Output shapes of every float32 dot in the optimised HLO (inside fusions too)."""
  return [tuple(int(d) for d in m.group(1).split(',') if d)
          for m in _DOT.finditer(compiled.as_text())]


def jaxpr_dot_shapes(traced: Any) -> list[tuple[int, ...]]:
  """Output shapes of every dot_general in a traced program's jaxpr (`jax.jit(f).trace(...)`,
  the same trace that is lowered and compiled), nested jaxprs included.

  Unlike the optimised HLO, where XLA flattens [batch, length, hidden] activations to
  [batch * length, hidden], the jaxpr keeps the token axes apart: an activation (gradient)
  never has a kernel's 2-D shape here, whereas in the HLO it does when batch * length
  equals a kernel dimension (32 * 128 = 4096, RoBERTa-large's intermediate size)."""
  shapes = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        shapes.append(tuple(eqn.outvars[0].aval.shape))
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr
          if hasattr(sub, 'eqns'):
            walk(sub)

  walk(traced.jaxpr.jaxpr)
  return shapes


def kernel_shapes(tree: Any) -> set[tuple[int, ...]]:
  """Shapes of the kernels (dense, adapter and LoRA) in a parameter tree."""
  return {tuple(x.shape) for p, x in traverse_util.flatten_dict(tree).items()
          if p[-1] in KERNELS}


def frozen_grad_dots(step: Any, fwd: Any, frozen: Any, trainable: Any) -> int:
  """Dots in the traced step, beyond the traced forward's, whose output has the shape of a
  frozen kernel (and of no trainable one), in either order: a weight gradient of a frozen
  kernel would be one."""
  # Either dimension order: autodiff may emit a weight gradient transposed.
  unordered = lambda shapes: {tuple(sorted(s)) for s in shapes}
  kernels = unordered(kernel_shapes(frozen)) - unordered(kernel_shapes(trainable))
  count = lambda traced: sum(tuple(sorted(s)) in kernels for s in jaxpr_dot_shapes(traced))
  return count(step) - count(fwd)
