"""Which sampler a WebUI pass runs (A1111, Forge and reForge alike), and which of them the methods
that move the latent serve. sd_samplers_common.Sampler keeps the `funcname` its constructor got: the
name of a k_diffusion.sampling function (a str) for most k-diffusion samplers, but the sampler
function itself for the timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC: sd_samplers_timesteps.py);
create_sampler attaches the SamplerData whose `name` the user picked."""

EXCITE_TIMESTEP_SAMPLERS = ("ddim",)  # DDIM is Euler in sigma space; PLMS, UniPC, DDIM CFG++ are not first order


def function_name(sampler):
    """'ddim', 'plms', 'sample_euler', ...: the sampler function's name, whichever form funcname has."""
    funcname = getattr(sampler, "funcname", None)
    return funcname if isinstance(funcname, str) else getattr(funcname, "__name__", None)


def user_name(sampler):
    """The sampler as the user knows it ('PLMS', 'DPM++ 2M')."""
    config = getattr(sampler, "config", None)
    return getattr(config, "name", None) or function_name(sampler) or type(sampler).__name__


def is_timestep_sampler(sampler):
    return hasattr(sampler, "get_timesteps") and not hasattr(sampler, "get_sigmas")


def excite_refusal(sampler, title="Attend-and-Excite", timestep=None):
    """The message why Attend-and-Excite does not run with `sampler`, or None where it runs. timestep: whether
    it is a timestep sampler, where the caller knows it better (A1111: its denoiser has alphas)."""
    timestep = is_timestep_sampler(sampler) if timestep is None and sampler is not None else timestep
    if sampler is None or not timestep or function_name(sampler) in EXCITE_TIMESTEP_SAMPLERS:
        return None
    return (f"{title}: the sampler {user_name(sampler)} is not served (its steps are not first-order in sigma); "
            "use DDIM or a k-diffusion sampler (Euler is exact).")
