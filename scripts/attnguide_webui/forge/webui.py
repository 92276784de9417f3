"""What only the WebUI knows and the Forge backend needs, read from a generation `p`
(a StableDiffusionProcessing) in Script.process_before_every_sampling:

    params.update(webui.host_params(p, method))
    p.sd_model.forge_objects.unet = backend.apply(method, p.sd_model.forge_objects.unet, params)

  sigmas    the schedule the k-diffusion sampler of this pass runs, recomputed the way Forge's
            and reForge's KDiffusionSampler do (modules/sd_samplers_kdiffusion.py: get_sigmas,
            sample_img2img slicing sigmas[steps - t_enc - 1:] after
            sd_samplers_common.setup_img2img_steps; the hires pass samples img2img with
            steps = hr_second_pass_steps or steps). The timestep samplers (DDIM, DDIM CFG++, PLMS,
            UniPC: modules/sd_samplers_timesteps.py) have no get_sigmas: their CFGDenoiser hands the
            model sigma sqrt((1 - abar) / abar) of each timestep (classic_ddim_eps_estimation), so
            their schedule is those sigmas of the timesteps they run (get_timesteps, img2img
            timesteps[:t_enc]; UniPC: its solver's time steps; guidance.timestep_schedule).
  encode    texts -> conditioning, as the prompt is encoded (sd_model.get_learned_conditioning
            with the image size SDXL's vector needs).
  init_latent  img2img's init latent (p.init_latent), which Pix2Pix-Zero inverts.
  tokenize  text -> [(position, token id, piece)] with the checkpoint's own prompt chunking
            (tokenize_line of Forge's ClassicTextProcessingEngine / reForge's CLIP wrapper:
            each chunk is <|startoftext|>, 75 tokens or padding, <|endoftext|>).
"""
from ....guidance.timestep_schedule import sigmas_at, timestep_sigmas
from ..webui_samplers import excite_refusal, function_name


def host_params(p, method):
    out = {"sigmas": lambda: schedule(p)}
    if method in ("sega", "pix2pix_zero"):
        out["encode"] = encoder(p)
    if method == "pix2pix_zero":
        out["init_latent"] = getattr(p, "init_latent", None)  # img2img's VAE-encoded init image
    if method == "attend_excite":
        refusal = excite_refusal(getattr(p, "sampler", None))
        if refusal:
            raise ValueError(refusal)
        out["tokenize"] = tokenizer(p.sd_model)
    return out


def schedule(p, img2img_steps=None):
    """The sigmas of the pass about to run, or None where the sampler has no schedule."""
    of = _schedule_maker(getattr(p, "sampler", None))
    if of is None:
        return None
    hires = bool(getattr(p, "is_hr_pass", False))
    if not hires and not getattr(p, "init_images", None):
        return of(p, p.steps, None)
    if img2img_steps is None:
        from modules.sd_samplers_common import setup_img2img_steps as img2img_steps
    steps, t_enc = img2img_steps(p, (p.hr_second_pass_steps or p.steps) if hires else None)
    return of(p, steps, t_enc)


def _schedule_maker(sampler):
    """of(p, steps, t_enc) -> the sigmas `sampler` runs (t_enc None: txt2img), or None."""
    if sampler is None:
        return None
    if hasattr(sampler, "get_sigmas"):
        def k_diffusion(p, steps, t_enc):
            sigmas = sampler.get_sigmas(p, steps)
            return sigmas if t_enc is None else sigmas[steps - t_enc - 1:]
        return k_diffusion
    if hasattr(sampler, "get_timesteps") and hasattr(sampler, "model_wrap_cfg"):
        return lambda p, steps, t_enc: _timestep_schedule(sampler, p, steps, t_enc)
    return None


def _timestep_schedule(sampler, p, steps, t_enc):
    timesteps = sampler.get_timesteps(p, steps)
    if t_enc is not None:
        timesteps = timesteps[:t_enc]  # CompVisSampler.sample_img2img's timesteps_sched
    alphas_cumprod = sampler.model_wrap_cfg.inner_model.inner_model.alphas_cumprod  # what its forward reads
    if function_name(sampler) == "unipc":
        return _unipc_schedule(timesteps, alphas_cumprod, t_enc is not None)
    return timestep_sigmas(timesteps, alphas_cumprod)


def _unipc_schedule(timesteps, alphas_cumprod, img2img):
    """sd_samplers_timesteps_impl.unipc: UniPC.sample(steps=len(timesteps)) evaluates the model at
    its solver's time steps t, as model timestep (t - 1/N) * 1000 (UniPCCFG.get_model_input_time)."""
    from modules.models.diffusion.uni_pc import uni_pc
    from modules.shared import opts
    ns = uni_pc.NoiseScheduleVP("discrete", alphas_cumprod=alphas_cumprod)
    t_start = timesteps[-1] / 1000 + 1 / 1000 if img2img else None
    solver = uni_pc.UniPC(None, ns, predict_x0=True, thresholding=False, variant=opts.uni_pc_variant)
    t_0, t_T = 1. / ns.total_N, (ns.T if t_start is None else t_start)
    ts = solver.get_time_steps(skip_type=opts.uni_pc_skip_type, t_T=t_T, t_0=t_0, N=len(timesteps),
                               device=alphas_cumprod.device)
    return sigmas_at((ts - 1. / ns.total_N) * 1000., alphas_cumprod)


def encoder(p):
    def encode(texts):
        from modules import prompt_parser
        return p.sd_model.get_learned_conditioning(prompt_parser.SdConditioning(list(texts), width=p.width,
                                                                                height=p.height))
    return encode


def tokenizer(sd_model):
    """tokenize(text) from the checkpoint's CLIP-L prompt engine."""
    engine = _prompt_engine(sd_model)

    def tokenize(text):
        chunks, _ = engine.tokenize_line(text)
        specials = {engine.id_start, engine.id_end, getattr(engine, "id_pad", None)}
        hf = getattr(engine, "tokenizer", None) or engine.wrapped.tokenizer
        out = []
        for k, chunk in enumerate(chunks):
            for j, token in enumerate(chunk.tokens):
                if token not in specials:
                    out.append((k * len(chunk.tokens) + j, int(token), hf.convert_ids_to_tokens(int(token))))
        return out

    return tokenize


def _prompt_engine(sd_model):
    for name in ("text_processing_engine_l", "text_processing_engine"):  # Forge SDXL / SD1.x-2.x
        engine = getattr(sd_model, name, None)
        if engine is not None:
            return engine
    engine = getattr(sd_model, "cond_stage_model", None) or sd_model.conditioner  # reForge: A1111's CLIP wrapper
    embedders = getattr(engine, "embedders", None)
    return embedders[0] if embedders else engine
