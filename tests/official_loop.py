"""The official AdaMix training loop's optimizer, written out in PyTorch for the parity tests.

microsoft/AdaMix is a fork of transformers 4.4.2 run with torch 1.9. Per step its `Trainer`
does: backward, `clip_grad_norm_(max_grad_norm)` (default 1.0), `optimizer.step()` with
transformers' own `AdamW` (below, from src/transformers/optimization.py), the linear
schedule's step, and `model.zero_grad()`, which in torch 1.x zeroes every existing `.grad` in
place (`set_to_none=False`): a parameter that has had a gradient once keeps a zero gradient
tensor, and AdamW's `if p.grad is None: continue` skips only parameters never reached by a
backward pass.
"""

from __future__ import annotations

import math

import torch


class AdamW442(torch.optim.Optimizer):
  """transformers 4.4.2 `AdamW` (correct_bias=True), verbatim in substance."""

  def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

  @torch.no_grad()
  def step(self):
    for group in self.param_groups:
      for p in group['params']:
        if p.grad is None:
          continue
        grad = p.grad
        state = self.state[p]
        if len(state) == 0:
          state['step'] = 0
          state['exp_avg'] = torch.zeros_like(p)
          state['exp_avg_sq'] = torch.zeros_like(p)
        exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
        beta1, beta2 = group['betas']
        state['step'] += 1
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = exp_avg_sq.sqrt().add_(group['eps'])
        step_size = group['lr']
        bias_correction1 = 1.0 - beta1 ** state['step']
        bias_correction2 = 1.0 - beta2 ** state['step']
        step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
        p.addcdiv_(exp_avg, denom, value=-step_size)
        if group['weight_decay'] > 0.0:
          p.add_(p, alpha=-group['lr'] * group['weight_decay'])


def linear_schedule(optimizer, warmup_ratio: float, total_steps: int):
  """`get_linear_schedule_with_warmup` with the Trainer's `ceil(ratio * steps)` warm-up."""
  warmup = math.ceil(total_steps * warmup_ratio)

  def factor(step):
    if step < warmup:
      return float(step) / float(max(1, warmup))
    return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup)))

  return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def zero_grad_torch_1x(params) -> None:
  """`Module.zero_grad()` of torch 1.9 (set_to_none=False)."""
  for p in params:
    if p.grad is not None:
      p.grad.detach_()
      p.grad.zero_()


def clip_grad_norm_torch_1x(params, max_norm: float) -> None:
  """`torch.nn.utils.clip_grad_norm_` of torch 1.9 (2-norm), over parameters with a grad."""
  grads = [p.grad for p in params if p.grad is not None]
  if not grads:
    return
  total = torch.norm(torch.stack([torch.norm(g.detach(), 2.0) for g in grads]), 2.0)
  coef = max_norm / (total + 1e-6)
  if coef < 1:
    for g in grads:
      g.detach().mul_(coef)


def decay_groups(named_params, weight_decay: float):
  """`Trainer.create_optimizer`: no decay for biases and LayerNorm parameters."""
  decay, no_decay = [], []
  for name, p in named_params:
    (no_decay if 'bias' in name or 'LayerNorm' in name else decay).append(p)
  return [dict(params=decay, weight_decay=weight_decay),
          dict(params=no_decay, weight_decay=0.0)]
