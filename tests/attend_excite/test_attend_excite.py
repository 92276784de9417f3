"""Attend-and-Excite inside a real ComfyUI (COMFYUI_PATH): equal to diffusers'
StableDiffusionAttendAndExcitePipeline and to the core on the same weights, under the
executor's inference_mode, on a model whose weights are inference tensors (loaded by an
earlier run), leaving the model as it was; batch 2, stacked with PAG, word lookup, maps,
bad input."""
import types

import pytest
import torch

import comfy_host as H
import diffusers_in_comfy as D
from diffusers_fixtures import dif, pair, schedule  # noqa: F401  (fixtures)
from node_runs import pag_node, rel, sag_node
from test_comfy_vs_diffusers import check, comfy_run, inputs

STEPS = D.STEPS
# refinement at steps 0 and 1, updates before steps 0-2 (4 steps in all)
REF = dict(thresholds={0: 0.05, 1: 0.5}, max_iter_to_alter=3, scale_factor=20)
NODE = dict(max_excite_steps="3", thresholds="0: 0.05, 1: 0.5", scale_factor=20.0)


def excite_node_output(m, **kw):
    from attnguide.nodes.attend_excite import AttendAndExcite
    args = dict(prompt="", words="", max_excite_steps="25", thresholds="0: 0.05, 10: 0.5, 20: 0.8", scale_factor=20.0,
                scale_range_start=1.0, scale_range_end=0.5, max_refinement_iterations=20, smoothing_sigma=0.5,
                attention_downscale=1, token_indices="2, 5")
    args.update(kw)
    return AttendAndExcite.execute(m, **args)


def excite_node(m, **kw):
    return excite_node_output(m, **kw).args[0]


def reference(unet, data, cfg, indices, **kwargs):
    import diffusers
    pipe = diffusers.StableDiffusionAttendAndExcitePipeline(
        vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=D.ddim_scheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    h, w = data["latents"].shape[-2:]
    return pipe(prompt=None, token_indices=indices, latents=data["latents"].clone(),
                prompt_embeds=data["prompt_embeds"].clone(), negative_prompt_embeds=data["negative_prompt_embeds"].clone(),
                num_inference_steps=STEPS, guidance_scale=cfg, height=8 * h, width=8 * w, output_type="latent",
                **kwargs).images


def comfy_in_executor(model, data, cfg, schedule):
    with torch.inference_mode():  # what ComfyUI's executor wraps every node in
        return comfy_run(model, data, cfg, schedule)


def test_equals_diffusers_and_core(pair, schedule):
    import attend_excite_host
    from sigma_host import ddim_schedule
    from attnguide.guidance.attend_excite import ExciteSettings
    unet, model = pair
    data = inputs(1, 32)
    ref = reference(unet, data, 7.5, [2, 5], **REF)
    ours = comfy_in_executor(excite_node(model, **NODE), data, 7.5, schedule)
    check(ours, ref, reference(unet, data, 7.5, [2, 5], thresholds={}, max_iter_to_alter=0))
    core = attend_excite_host.sample(unet, ddim_schedule(D.ddim_scheduler(), STEPS), data["latents"],
                                     data["prompt_embeds"], data["negative_prompt_embeds"], 7.5,
                                     ExciteSettings((2, 5), 3, ((0, 0.05), (1, 0.5)), 20.0))
    assert rel(ours, core) <= 1e-4


def test_percent_inputs_equal_steps(pair, schedule):
    unet, model = pair
    data = inputs(1, 32)
    steps = comfy_in_executor(excite_node(model, **NODE), data, 7.5, schedule)
    percent = comfy_in_executor(excite_node(model, max_excite_steps="75%", thresholds="0%: 0.05, 25%: 0.5"),
                                data, 7.5, schedule)
    assert torch.equal(steps, percent)


def test_batch2_nonsquare_equals_diffusers(pair, schedule):
    unet, model = pair
    data = inputs(2, 32, shape=(16, 24))
    # 16x24 latent: the reference's attn_res must name the level's grid; ours derives it
    ref = reference(unet, data, 5.0, [[2, 5], [2, 5]], attn_res=(16, 24), **REF)
    ours = comfy_in_executor(excite_node(model, **NODE), data, 5.0, schedule)
    check(ours, ref, reference(unet, data, 5.0, [[2, 5], [2, 5]], attn_res=(16, 24), thresholds={}, max_iter_to_alter=0))
    assert rel(ref[0], ref[1]) > 1e-2


def _to_inference_tensors(module):
    """What loading a model inside a run does (ComfyUI's set_attr_param under inference mode):
    every parameter becomes a new nn.Parameter created as an inference tensor."""
    with torch.inference_mode():
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[name] = torch.nn.Parameter(p.data.clone(), requires_grad=True)
            for name, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[name] = b.clone()


def test_model_loaded_in_an_earlier_run_and_left_unchanged(dif, schedule):
    unet, model = D.tiny_sd1_pair(seed=3)
    data = inputs(1, 32, seed=5)
    expected = comfy_in_executor(excite_node(model, **NODE), data, 7.5, schedule)
    dm = model.model.diffusion_model
    _to_inference_tensors(dm)
    comfy_in_executor(model, data, 7.5, schedule)  # a plain KSampler-style run first
    params = {n: (p, p.data) for n, p in dm.named_parameters()}
    before = {n: p.clone() for n, p in dm.state_dict().items()}
    options, wrappers = repr(model.model_options), repr(model.wrappers)
    assert all(p.is_inference() for p, _ in params.values())

    ours = comfy_in_executor(excite_node(model, **NODE), data, 7.5, schedule)

    assert rel(ours, expected) <= 1e-6
    for n, p in dm.named_parameters():
        assert p is params[n][0] and p.data.data_ptr() == params[n][1].data_ptr(), n
        assert p.is_inference() and p.grad is None, n
    for n, v in dm.state_dict().items():
        assert torch.equal(v, before[n]), n
    assert (repr(model.model_options), repr(model.wrappers)) == (options, wrappers)


def test_no_grad_on_parameters_that_require_grad(dif, schedule):
    unet, model = D.tiny_sd1_pair(seed=3)
    model.model.diffusion_model.requires_grad_(True)
    comfy_in_executor(excite_node(model, **NODE), inputs(1, 32), 7.5, schedule)
    assert all(p.grad is None for p in model.model.diffusion_model.parameters())


def _count_calls(monkeypatch):
    import comfy.samplers
    calls = []
    real = comfy.samplers.calc_cond_batch

    def counting(model, conds, x, timestep, model_options):
        calls.append((len(conds), torch.is_grad_enabled()))
        return real(model, conds, x, timestep, model_options)

    monkeypatch.setattr(comfy.samplers, "calc_cond_batch", counting)
    return calls


def test_cost_no_gradient_forward_after_the_window(pair, schedule, monkeypatch):
    unet, model = pair
    calls = _count_calls(monkeypatch)
    finished = []
    hook = model.model.diffusion_model.out.register_forward_hook(lambda *a: finished.append(1))
    try:
        comfy_in_executor(excite_node(model, max_excite_steps="2", thresholds=""), inputs(1, 32), 7.5, schedule)
    finally:
        hook.remove()
    grad = [c for c in calls if c[1]]
    assert len(grad) == 2 and all(n == 1 for n, _ in grad)       # cond rows only, steps 0 and 1
    assert len(calls) - len(grad) == STEPS                      # one CFG call per step
    assert len(finished) == STEPS    # the measuring forwards stop at their last captured layer


def test_stacks_with_pag(pair, schedule):
    from attnguide.comfyui.attend_excite import RECORD_KEY
    unet, model = pair
    data = inputs(1, 32)
    ae = excite_node(model, **NODE)
    alone = comfy_in_executor(ae, data, 7.5, schedule)
    maps_alone = dict(ae.model_options["transformer_options"][RECORD_KEY].maps)
    pag = comfy_in_executor(pag_node(model), data, 7.5, schedule)
    first = excite_node(pag_node(model), **NODE)
    both = comfy_in_executor(first, data, 7.5, schedule)
    other_order = comfy_in_executor(pag_node(excite_node(model, **NODE)), data, 7.5, schedule)
    assert rel(both, other_order) <= 1e-6
    assert rel(both, alone) > 1e-3 and rel(both, pag) > 1e-3
    # steps 0-2 start from the same x only at step 0, but PAG must not leak into the measuring forward:
    plain_first_step = excite_node(model, max_excite_steps="1", thresholds="0: 0.05")
    stacked_first_step = pag_node(excite_node(model, max_excite_steps="1", thresholds="0: 0.05"))
    comfy_in_executor(plain_first_step, data, 7.5, schedule)
    comfy_in_executor(stacked_first_step, data, 7.5, schedule)
    a = plain_first_step.model_options["transformer_options"][RECORD_KEY].maps[0]
    b = stacked_first_step.model_options["transformer_options"][RECORD_KEY].maps[0]
    assert torch.equal(a, b) and maps_alone


def test_stacks_with_sag_in_either_order(sd1):
    pos, neg = H.conds(sd1)
    latent = torch.zeros(1, 4, 16, 16)
    with torch.inference_mode():
        a = H.sample(sag_node(excite_node(sd1, thresholds="0: 0.05")), pos, neg, latent)
        b = H.sample(excite_node(sag_node(sd1), thresholds="0: 0.05"), pos, neg, latent)
        alone = H.sample(excite_node(sd1, thresholds="0: 0.05"), pos, neg, latent)
    assert rel(a, b) <= 1e-6 and rel(a, alone) > 1e-3


def test_sdxl_runs_at_its_attention_level_and_moves_the_result(comfy):
    model = H.tiny_sdxl()
    pos, neg = H.conds(model)
    with torch.inference_mode():
        plain = H.sample(model, pos, neg, torch.zeros(1, 4, 16, 16))
        ours = H.sample(excite_node(model, attention_downscale=2, thresholds="0: 0.05"), pos, neg, torch.zeros(1, 4, 16, 16))
    assert torch.isfinite(ours).all() and rel(ours, plain) > 1e-3
    with pytest.raises(ValueError, match=r"attention_downscale 1: .*2: d3\.0, d3\.1, m0\.0"):
        excite_node(model, attention_downscale=1)


def test_other_samplers_run(sd1):
    pos, neg = H.conds(sd1)
    with torch.inference_mode():
        for sampler in ("euler_ancestral", "heun", "dpmpp_2m"):
            out = H.sample(excite_node(sd1, thresholds="0: 0.05"), pos, neg, torch.zeros(1, 4, 16, 16), sampler=sampler)
            assert torch.isfinite(out).all(), sampler


def test_maps_node(sd1):
    from attnguide.nodes.attend_excite import AttendAndExciteMaps
    pos, neg = H.conds(sd1, batch=2)
    m = excite_node(sd1, thresholds="0: 0.05")
    with pytest.raises(ValueError, match="No attention maps yet"):
        AttendAndExciteMaps.execute(m, {}, 8)
    with torch.inference_mode():
        out = H.sample(m, pos, neg, torch.zeros(2, 4, 16, 24))
        image = AttendAndExciteMaps.execute(m, {"samples": out}, 4).args[0]
    assert image.shape == (4, 64, 96, 3)          # 2 images x 2 tokens, 16x24 maps x 4
    assert 0 <= float(image.min()) and float(image.max()) <= 1 and float(image.max()) > 0
    with pytest.raises(ValueError, match="no Attend-and-Excite"):
        AttendAndExciteMaps.execute(sd1, {}, 8)


# ---------------------------------------------------------------- words and bad input

def _clip(comfy):
    """The real SD1 tokenizer; 'encoding' returns the tokens it was given, to check what was encoded."""
    import comfy.sd1_clip
    tokenizer = comfy.sd1_clip.SD1Tokenizer()
    return types.SimpleNamespace(tokenizer=tokenizer, tokenize=lambda text: tokenizer.tokenize_with_weights(text),
                                 encode_from_tokens_scheduled=lambda tokens: [["encoded", {"tokens": tokens}]])


def test_positive_output_is_the_prompt_encoded_with_the_clip(sd1):
    clip = _clip(None)
    out = excite_node_output(sd1, prompt="a cat and a frog", words="cat, frog", clip=clip, token_indices="")
    assert out.args[1] == [["encoded", {"tokens": clip.tokenize("a cat and a frog")}]]
    assert excite_node_output(sd1).args[1] is None  # no CLIP: nothing to encode with


def test_words_become_token_indices(comfy):
    from attnguide.comfyui.prompt_tokens import word_indices
    clip = _clip(comfy)
    assert word_indices(clip, "a cat and a frog", "cat, frog") == (2, 5)
    assert word_indices(clip, "A photo of a (cat:1.2) and a frog", "frog,cat") == (8, 5)
    pieces = [t for t, _ in clip.tokenize("quokkasaurus")["l"][0][1:] if t != 49407]
    assert len(pieces) > 1, "the test needs a word the tokenizer splits"
    assert word_indices(clip, "a photograph of a quokkasaurus", "quokkasaurus") == (4 + len(pieces),)
    long = " ".join(["word"] * 80) + " cat"
    assert word_indices(clip, long, "cat") == (77 + 1 + 80 - 75,)


def test_node_with_words_equals_node_with_indices(sd1):
    clip = _clip(None)
    pos, neg = H.conds(sd1)
    with torch.inference_mode():
        by_words = H.sample(excite_node(sd1, prompt="a cat and a frog", words="cat, frog", clip=clip, token_indices=""),
                            pos, neg, torch.zeros(1, 4, 16, 16))
        by_indices = H.sample(excite_node(sd1), pos, neg, torch.zeros(1, 4, 16, 16))
    assert torch.equal(by_words, by_indices)


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt="a cat and a frog", words="cat, dog"), r"'dog' is not in the prompt\. The prompt's words are: a, cat, and, a, frog"),
    (dict(prompt="a cat", words=" , "), "words is empty"),
    (dict(prompt="a cat", words="cat", clip=None), "clip is not connected"),
    (dict(token_indices="2, x"), "token_indices: cannot read"),
    (dict(token_indices="0"), "positions start at 1"),
    (dict(thresholds="0 0.05"), "thresholds: cannot read"),
    (dict(thresholds="0: 1.5"), "thresholds: cannot read"),
    (dict(max_excite_steps="ten"), "max_excite_steps: cannot read"),
    (dict(max_excite_steps="150%"), "above 100%"),
    (dict(attention_downscale=4), r"attention_downscale 4: .*1: d1\.0, u2\.0, u3\.0; 2: d3\.0, m0\.0, u0\.0, u1\.0"),
])
def test_bad_input_is_a_clear_error(sd1, kwargs, message):
    if "words" in kwargs:
        kwargs = {"clip": _clip(None), "token_indices": "", **kwargs}
    with pytest.raises(ValueError, match=message):
        excite_node(sd1, **kwargs)


def test_index_past_the_prompt_is_a_clear_error(sd1):
    pos, neg = H.conds(sd1)
    with torch.inference_mode(), pytest.raises(ValueError, match="past the prompt's last position"):
        H.sample(excite_node(sd1, token_indices="2, 76"), pos, neg, torch.zeros(1, 4, 16, 16))


# ---------------------------------------------------------------- the SAMPLER wrapper

def _custom(model, sampler, batch=1, steps=4, wrap=True):
    import comfy.sample
    import comfy.samplers
    from attnguide.nodes.excite_sampler import AttendAndExciteSampler
    pos, neg = H.conds(model, batch)
    latent = torch.zeros(batch, 4, 16, 16)
    s = comfy.samplers.sampler_object(sampler)
    if wrap:
        s = AttendAndExciteSampler.execute(s).args[0]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 0), 5.0, s, sigmas, pos, neg, latent,
                                          disable_pbar=True, seed=0)


def test_sampler_wrapper_with_euler_equals_the_model_correction(sd1):
    m = excite_node(sd1, thresholds="0: 0.05, 1: 0.5", max_excite_steps="3")
    wrapped = _custom(m, "euler", batch=2)
    corrected = _custom(m, "euler", batch=2, wrap=False)
    plain = _custom(sd1, "euler", batch=2, wrap=False)
    assert rel(wrapped, corrected) <= 1e-5 and rel(wrapped, plain) > 1e-3


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_sde", "heun"])
def test_sampler_wrapper_keeps_the_base_samplers_noise_and_steps(sd1, sampler):
    """With a zero step size the latent does not move: the step-by-step run must equal the
    base sampler's own run, noise sequence included."""
    still = excite_node(sd1, scale_factor=0.0, thresholds="")
    assert rel(_custom(still, sampler), _custom(sd1, sampler, wrap=False)) <= 1e-6
    moved = _custom(excite_node(sd1, thresholds="0: 0.05"), sampler)
    assert torch.isfinite(moved).all() and rel(moved, _custom(sd1, sampler, wrap=False)) > 1e-3


def test_sampler_wrapper_without_attend_and_excite_is_the_base_sampler(sd1):
    assert torch.equal(_custom(sd1, "euler_ancestral"), _custom(sd1, "euler_ancestral", wrap=False))


def test_sampler_wrapper_needs_a_k_diffusion_sampler(comfy):
    from attnguide.nodes.excite_sampler import AttendAndExciteSampler
    with pytest.raises(ValueError, match="cannot be run step by step"):
        AttendAndExciteSampler.execute(object())
