"""Which WebUI sampler a generation runs, as A1111, Forge and reForge store it, and which of them the
methods that move the latent serve."""

EXCITE_TIMESTEP_SAMPLERS = ("ddim",)  # DDIM is Euler in sigma space; PLMS, UniPC, DDIM CFG++ are not first order


def sampler_name(sampler):
    """The sampler's function name. The timestep samplers (DDIM, PLMS, UniPC, DDIM CFG++) keep the
    function itself in `funcname` (sd_samplers_timesteps.py -> sd_samplers_common.Sampler), the
    k-diffusion ones a string ('sample_euler')."""
    funcname = getattr(sampler, "funcname", None)
    return getattr(funcname, "__name__", funcname)


def is_timestep_sampler(sampler):
    return hasattr(sampler, "get_timesteps") and not hasattr(sampler, "get_sigmas")


def excite_refusal(sampler, title="Attend-and-Excite"):
    """The message why Attend-and-Excite does not run with `sampler`, or None where it runs."""
    if sampler is None or not is_timestep_sampler(sampler) or sampler_name(sampler) in EXCITE_TIMESTEP_SAMPLERS:
        return None
    return (f"{title}: the sampler {sampler_name(sampler)} is not served (its steps are not first-order in sigma); "
            "use DDIM or a k-diffusion sampler (Euler is exact).")
