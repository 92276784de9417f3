"""The sigma schedule of the WebUIs' timestep samplers (DDIM, DDIM CFG++, PLMS in A1111, Forge and
reForge: modules/sd_samplers_timesteps_impl.py). Given ascending integer `timesteps`, they evaluate
the model at timesteps[-1], ..., timesteps[1] and end at timesteps[0]; timestep t is sigma
sqrt((1 - abar_t) / abar_t) in sigma space (x = x0 + sigma * eps), the value Forge's and reForge's
CFGDenoiser hand the model (classic_ddim_eps_estimation) and A1111's DDIM is Euler in.
"""
import torch


def timestep_sigmas(timesteps, alphas_cumprod):
    """Descending sigmas of the run, one per evaluated timestep plus the one it ends at."""
    abar = alphas_cumprod[torch.as_tensor(timesteps, device=alphas_cumprod.device).long().flip(0)]
    return ((1 - abar) / abar) ** 0.5


def sigmas_at(model_timesteps, alphas_cumprod):
    """Sigma of each (possibly fractional) model timestep, rounded as Forge's CFGDenoiser rounds them
    (UniPC's model timesteps are continuous)."""
    index = torch.as_tensor(model_timesteps, device=alphas_cumprod.device).round().long()
    abar = alphas_cumprod[index.clip(0, alphas_cumprod.shape[0] - 1)]
    return ((1 - abar) / abar) ** 0.5
