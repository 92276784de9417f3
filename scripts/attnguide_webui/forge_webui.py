"""What only the WebUI knows and the Forge backend needs, read from a generation `p`
(a StableDiffusionProcessing) in Script.process_before_every_sampling:

    params.update(forge_webui.host_params(p, method))
    p.sd_model.forge_objects.unet = forge_backend.apply(method, p.sd_model.forge_objects.unet, params)

  sigmas    the schedule the k-diffusion sampler of this pass runs, recomputed the way Forge's
            and reForge's KDiffusionSampler do (modules/sd_samplers_kdiffusion.py: get_sigmas,
            sample_img2img slicing sigmas[steps - t_enc - 1:] after
            sd_samplers_common.setup_img2img_steps; the hires pass samples img2img with
            steps = hr_second_pass_steps or steps). Timestep samplers (no get_sigmas) give None.
  encode    texts -> conditioning, as the prompt is encoded (sd_model.get_learned_conditioning
            with the image size SDXL's vector needs).
  init_latent  img2img's init latent (p.init_latent), which Pix2Pix-Zero inverts.
  tokenize  text -> [(position, token id, piece)] with the checkpoint's own prompt chunking
            (tokenize_line of Forge's ClassicTextProcessingEngine / reForge's CLIP wrapper:
            each chunk is <|startoftext|>, 75 tokens or padding, <|endoftext|>).
"""


def host_params(p, method):
    out = {"sigmas": lambda: schedule(p)}
    if method in ("sega", "pix2pix_zero"):
        out["encode"] = encoder(p)
    if method == "pix2pix_zero":
        out["init_latent"] = getattr(p, "init_latent", None)  # img2img's VAE-encoded init image
    if method == "attend_excite":
        out["tokenize"] = tokenizer(p.sd_model)
    return out


def schedule(p, img2img_steps=None):
    """The sigmas of the pass about to run, or None where the sampler has no sigma schedule."""
    sampler = getattr(p, "sampler", None)
    if sampler is None or not hasattr(sampler, "get_sigmas"):
        return None
    hires = bool(getattr(p, "is_hr_pass", False))
    if not hires and not getattr(p, "init_images", None):
        return sampler.get_sigmas(p, p.steps)
    if img2img_steps is None:
        from modules.sd_samplers_common import setup_img2img_steps as img2img_steps
    steps, t_enc = img2img_steps(p, (p.hr_second_pass_steps or p.steps) if hires else None)
    return sampler.get_sigmas(p, steps)[steps - t_enc - 1:]


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
