"""What the host tests share to run the SAG and PAG nodes and to compare runs: the nodes with
the tests' defaults (keywords named as the node inputs), one sampling run of a small latent
(comfy_host.sample), the relative difference of two results and a log of UNet batch sizes."""
import torch

import comfy_host as H


def nodes():
    from attnguide.nodes.pag import PerturbedAttentionGuidance
    from attnguide.nodes.sag import SelfAttentionGuidance
    return SelfAttentionGuidance, PerturbedAttentionGuidance


def sag_node(m, scale=0.75, blur_sigma=1.0, threshold=1.0, layer="m0.0", start_percent=0.0, end_percent=1.0):
    return nodes()[0].execute(m, scale=scale, blur_sigma=blur_sigma, threshold=threshold, layer=layer, start_percent=start_percent, end_percent=end_percent).args[0]


def pag_node(m, scale=3.0, adaptive_scale=0.0, layers="m0", rescale=0.0, start_percent=0.0, end_percent=1.0):
    return nodes()[1].execute(m, scale=scale, adaptive_scale=adaptive_scale, layers=layers, rescale=rescale, start_percent=start_percent, end_percent=end_percent).args[0]


def run(m, batch=1, cfg=5.0, shape=(16, 16), steps=4, sampler="euler"):
    pos, neg = H.conds(m, batch)
    return H.sample(m, pos, neg, torch.zeros(batch, 4, *shape), steps=steps, cfg=cfg, sampler=sampler)


def rel(a, b):
    """max |a - b| / max |b|"""
    return float((a - b).abs().max() / b.abs().max())


class BatchLog:
    """Batch sizes of every UNet forward."""

    def __init__(self, model):
        self.sizes = []
        self.handle = model.model.diffusion_model.register_forward_pre_hook(
            lambda mod, args: self.sizes.append(args[0].shape[0]))

    def close(self):
        self.handle.remove()
