"""A faithful copy of lucidrains' lion-pytorch (github.com/lucidrains/lion-pytorch,
lion_pytorch/lion_pytorch.py and lion_pytorch/foreach.py, without the triton kernel):
the Lion that std's `optimizer lion` names (`torch lion_pytorch:Lion`), for the tests to
run where the package is not installed. Lion (Chen et al. 2023): update = sign(beta1 m
+ (1 - beta1) g); p -= lr (update + wd p); m = beta2 m + (1 - beta2) g."""

from __future__ import annotations

import sys
import types

import torch
from torch.optim.optimizer import Optimizer


def update_fn(p, grad, exp_avg, lr, wd, beta1, beta2):
    p.data.mul_(1.0 - lr * wd)
    update = exp_avg.clone().mul_(beta1).add(grad, alpha=1.0 - beta1).sign_()
    p.add_(update, alpha=-lr)
    exp_avg.mul_(beta2).add_(grad, alpha=1.0 - beta2)


class Lion(Optimizer):
    """lion_pytorch.Lion: one parameter at a time."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
                 decoupled_weight_decay=False):
        assert lr > 0.0
        self._init_lr = lr
        self.decoupled_wd = decoupled_weight_decay
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in (p for p in group["params"] if p.grad is not None):
                lr, wd = group["lr"], group["weight_decay"]
                beta1, beta2 = group["betas"]
                if self.decoupled_wd:
                    wd /= self._init_lr
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                update_fn(p, p.grad, state["exp_avg"], lr, wd, beta1, beta2)


class ForeachLion(Optimizer):
    """lion_pytorch.foreach.Lion: every parameter of a group at once."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
                 decoupled_weight_decay=False):
        assert lr > 0.0
        self._init_lr = lr
        self.decoupled_wd = decoupled_weight_decay
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            if self.decoupled_wd:
                wd /= self._init_lr
            params, grads, exp_avgs = [], [], []
            for p in (p for p in group["params"] if p.grad is not None):
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
            if wd > 0.0:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            updates = [t.clone() for t in exp_avgs]
            torch._foreach_lerp_(updates, grads, 1.0 - beta1)
            torch._foreach_sign_(updates)
            torch._foreach_add_(params, updates, alpha=-lr)
            torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta2)


def install(monkeypatch) -> None:
    """Make `import lion_pytorch` and `lion_pytorch.foreach` find these classes."""
    package = types.ModuleType("lion_pytorch")
    package.Lion = Lion
    foreach = types.ModuleType("lion_pytorch.foreach")
    foreach.Lion = ForeachLion
    package.foreach = foreach
    monkeypatch.setitem(sys.modules, "lion_pytorch", package)
    monkeypatch.setitem(sys.modules, "lion_pytorch.foreach", foreach)
