"""Gradients through a host model inside a sampling run (ComfyUI, Forge, reForge).

ComfyUI runs nodes under torch.inference_mode() and samplers under no_grad. A model loaded
during a run has parameters created under inference mode: inference tensors, which
autograd cannot save for backward (and which cannot be repaired in place: even with new
.data such a parameter keeps no version counter). While the context is open, every module
sees plain stand-ins instead: a copy of each inference tensor, a detached view of each
weight that requires grad (so no gradient graph grows towards the weights and no
inference-mode conditioning tensor has to be saved with them). On exit the modules get
their own parameter and buffer objects back, so the model is exactly as it was, also after
an error or an interruption. Take gradients with torch.autograd.grad with respect to the
inputs: nothing reaches the weights' .grad.
"""
import contextlib

import torch


def _stand_in(t):
    if t.is_inference():
        return t.detach().clone()
    return t.detach() if t.requires_grad else None


@contextlib.contextmanager
def gradients_through(module):
    with torch.inference_mode(False), torch.enable_grad():
        saved = []
        try:
            for m in module.modules():
                for slots in (m._parameters, m._buffers):
                    for name, t in list(slots.items()):
                        s = _stand_in(t) if t is not None else None
                        if s is not None:
                            saved.append((slots, name, t))
                            slots[name] = s
            yield
        finally:
            for slots, name, t in reversed(saved):
                slots[name] = t
