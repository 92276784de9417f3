"""Gradients through a ComfyUI model inside a sampling run.

ComfyUI runs nodes under torch.inference_mode() and samplers under no_grad. Weights that
were created or moved to the device under inference mode (what loading a model onto the
GPU during a run does) are inference tensors, which autograd cannot save for backward.
While the context is open such weights are swapped for plain copies; on exit the
module gets its own tensors back, so the model is exactly as it was (also after an
error or an interruption). Use torch.autograd.grad with respect to the inputs: nothing
is accumulated into .grad of the weights.
"""
import contextlib
import itertools

import torch


@contextlib.contextmanager
def gradients_through(module):
    with torch.inference_mode(False), torch.enable_grad():
        swapped = []
        try:
            for t in itertools.chain(module.parameters(), module.buffers()):
                if t.is_inference():
                    swapped.append((t, t.data))
                    t.data = t.data.clone()
            yield
        finally:
            for t, data in swapped:
                t.data = data
