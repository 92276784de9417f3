"""A1111's two kinds of inner model, seen in sigma space (x = x0 + sigma * eps, outputs
as the denoised prediction D), where the guidance in guidance/ works.

k-diffusion samplers: CFGDenoiserKDiffusion's inner model (k_diffusion.external.CompVis(V)Denoiser)
takes x and the sigmas and returns D: nothing to convert.
DDIM, PLMS, UniPC, DDIM CFG++: CFGDenoiserTimesteps (modules/sd_samplers_timesteps.py:47-72)
passes the DDIM latent x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and the timesteps, and its
inner model returns eps; abar is read at the integer timestep as its get_pred_x0 does.
"""
import torch


def space_for(denoiser):
    alphas = getattr(denoiser, "alphas", None)  # only CFGDenoiserTimesteps has it (sd_samplers_timesteps.py:50)
    return EpsSpace(alphas) if alphas is not None else DenoisedSpace()


class DenoisedSpace:
    def x(self, x, t):
        return x

    def sigma(self, t):
        return t

    def denoised(self, x, t, out):
        return out

    def output(self, x, t, denoised):
        return denoised

    def model_x(self, x_sigma, t):
        return x_sigma

    def timestep(self, t, inner_model):
        return float(inner_model.sigma_to_t(t.flatten()[:1]).flatten()[0])


class EpsSpace:
    def __init__(self, alphas_cumprod):
        self.alphas = alphas_cumprod

    def _a(self, t):
        """(sqrt(abar), sqrt(1 - abar)) per row, broadcastable over a latent."""
        abar = self.alphas.to(t.device)[t.to(torch.long)].to(torch.float64).reshape(-1, 1, 1, 1)
        return abar.sqrt(), (1 - abar).sqrt()

    def x(self, x, t):
        a, _ = self._a(t)
        return (x / a).to(x.dtype)

    def sigma(self, t):
        a, s = self._a(t)
        return (s / a).flatten().to(torch.float32)

    def denoised(self, x, t, out):
        a, s = self._a(t)
        return ((x - s * out) / a).to(out.dtype)

    def output(self, x, t, denoised):
        a, s = self._a(t)
        return ((x - a * denoised) / s).to(denoised.dtype)

    def model_x(self, x_sigma, t):
        a, _ = self._a(t)
        return (x_sigma * a).to(x_sigma.dtype)

    def timestep(self, t, inner_model):
        return float(t.flatten()[0])
