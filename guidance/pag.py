"""Perturbed-Attention Guidance (Ahn et al. 2024) in sigma space.

The perturbed prediction comes from the conditional branch with the chosen
self-attention maps replaced by the identity (attention.math.identity_attention).
"""


def pag_scale(scale, adaptive_scale, timestep):
    """diffusers' adaptive schedule: the scale shrinks by adaptive_scale per timestep below 1000."""
    if adaptive_scale <= 0:
        return scale
    return max(0.0, scale - adaptive_scale * (1000.0 - float(timestep)))


def pag_guidance(denoised, cond_denoised, perturbed_denoised, scale):
    """D_cfg + s * (D_cond - D_perturbed); with no CFG pass D_cond as denoised."""
    return denoised + scale * (cond_denoised - perturbed_denoised)
