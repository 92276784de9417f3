"""Which sampler an A1111 pass runs. sd_samplers_common.Sampler (:230-232) keeps the
`funcname` its constructor got: the name of a k_diffusion.sampling function (a str) for
most k-diffusion samplers, but the sampler function itself for the timestep samplers
(DDIM, DDIM CFG++, PLMS, UniPC: sd_samplers_timesteps.py:11-16) and for Restart.
create_sampler (sd_samplers.py:41-42) attaches the SamplerData whose `name` the user picked."""


def function_name(sampler):
    """'ddim', 'plms', 'sample_euler', ...: the sampler function's name, whichever form funcname has."""
    funcname = getattr(sampler, "funcname", None)
    return funcname if isinstance(funcname, str) else getattr(funcname, "__name__", None)


def user_name(sampler):
    """The sampler as the user knows it ('PLMS', 'DPM++ 2M')."""
    config = getattr(sampler, "config", None)
    return getattr(config, "name", None) or function_name(sampler) or type(sampler).__name__
