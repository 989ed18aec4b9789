"""The memory trackers verify runs: torch's own, told the phase of the step, and the
loss scaler it steps with."""

from __future__ import annotations

from memspec.scaler import LossScaler

__all__ = ["PhaseNaming", "always_stepping", "fsdp_tracker", "phase_tracker"]


class _NoHook:
    """A removable handle of no hook."""

    def remove(self) -> None:
        pass


_NO_HOOK = _NoHook()


class PhaseNaming:
    """Mixed into a torch memory tracker: notes the phase of the step (and the modules
    running) when it records a new peak; `unscaling` while a loss scaler unscales."""

    peak_phase = ""
    peak_modules: tuple[str, ...] = ()
    unscaling = False

    def _update_peak_stats(self, peak_state) -> None:
        before = dict(self._peak_mem)
        super()._update_peak_stats(peak_state)
        if self._peak_mem != before:
            if self._in_opt:
                self.peak_phase = "optimizer step"
            elif self.unscaling:
                self.peak_phase = "unscaling gradients"
            else:
                self.peak_phase = "backward" if self._mod_tracker.is_bw else "forward"
            self.peak_modules = tuple(sorted(self._mod_tracker.parents - {"Global"}))


def phase_tracker():
    """MemTracker, noting the phase of the step when it records a new peak."""
    from torch.distributed._tools.mem_tracker import MemTracker

    class PhaseTracker(PhaseNaming, MemTracker):
        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            # torch's tracker hooks every parameter's gradient, which a frozen one
            # (requires_grad=False) refuses: it gets a handle that holds no hook
            for param in module.parameters():
                if not param.requires_grad and param not in self._param_to_grad_hook_handles:
                    self._param_to_grad_hook_handles[param] = (_NO_HOOK, _NO_HOOK)
            return super()._track_module_params_and_buffers(module, install_grad_hooks)

    return PhaseTracker()


def fsdp_tracker(model, optimizer):
    """FSDPMemTracker, noting the phase of the step and the modules running when it
    records a new peak."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    class PhaseTracker(PhaseNaming, FSDPMemTracker):
        pass

    return PhaseTracker(model, optimizer)


def always_stepping(policy: LossScaler, tracker):
    """The precision's loss scaler, telling `tracker` while it unscales, and stepping
    every time: memspec models a step that is taken (a skipped one allocates less), and
    fake tensors cannot say whether gradients overflowed (`found_inf.item()`, which
    allocates nothing)."""
    from memspec.verify.measure import scaler_class

    class AlwaysStepping(scaler_class(policy)):
        def unscale_(self, optimizer) -> None:
            tracker.unscaling = True
            try:
                super().unscale_(optimizer)
            finally:
                tracker.unscaling = False

        def _check_inf_per_device(self, optimizer):
            tracker.unscaling = True
            try:
                return super()._check_inf_per_device(optimizer)
            finally:
                tracker.unscaling = False

        def _maybe_opt_step(self, optimizer, optimizer_state, *args, **kwargs):
            return optimizer.step(*args, **kwargs)

    return AlwaysStepping("cpu", **dict(policy.torch_args))
