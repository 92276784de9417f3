"""A test double of the A1111 pieces AttnGuide's scripts touch, written from A1111's
documented behaviour (no A1111 code). Every function names the A1111 v1.10.1 (82a973c0)
file:line it mirrors; k-diffusion 0.1.1.post1 pieces name k_diffusion/*.py lines.

install() puts `modules`, `modules.scripts`, `modules.script_callbacks`, `modules.shared`,
`modules.prompt_parser`, `modules.ui_components` and a small `gradio` into sys.modules;
uninstall() takes them out again. The UNet is a real ldm UNetModel (stable-diffusion-sdkit
ships A1111's `ldm` package) when available.
"""
import math
import sys
import types
from contextlib import closing

import torch

NAMES = ("modules", "modules.scripts", "modules.script_callbacks", "modules.shared", "modules.prompt_parser",
         "modules.ui_components", "gradio")


# --- modules.script_callbacks ------------------------------------------------------------------------

class CFGDenoiserParams:  # modules/script_callbacks.py:45
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x, self.image_cond, self.sigma = x, image_cond, sigma
        self.sampling_step, self.total_sampling_steps = sampling_step, total_sampling_steps
        self.text_cond, self.text_uncond, self.denoiser = text_cond, text_uncond, denoiser


class CFGDenoisedParams:  # modules/script_callbacks.py:72
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x, self.sampling_step, self.total_sampling_steps, self.inner_model = x, sampling_step, total_sampling_steps, inner_model


class AfterCFGCallbackParams:  # modules/script_callbacks.py:87
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x, self.sampling_step, self.total_sampling_steps = x, sampling_step, total_sampling_steps


def _callbacks_module():
    m = types.ModuleType("modules.script_callbacks")
    m.callback_map = {k: [] for k in ("cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "before_ui")}
    m.errors = []
    m.CFGDenoiserParams, m.CFGDenoisedParams, m.AfterCFGCallbackParams = CFGDenoiserParams, CFGDenoisedParams, AfterCFGCallbackParams

    def add(category):  # add_callback, script_callbacks.py:127 (name/file bookkeeping left out)
        def register(callback, *, name=None):
            m.callback_map[category].append(types.SimpleNamespace(callback=callback, name=name))
        return register

    def run(category):  # e.g. cfg_denoiser_callback, script_callbacks.py:329: each in try/except, errors reported
        def runner(*params):
            for c in list(m.callback_map[category]):
                try:
                    c.callback(*params)
                except Exception as e:  # report_exception: logged, generation goes on
                    m.errors.append((category, e))
        return runner

    def remove_callbacks_for_function(callback_func):  # script_callbacks.py:447: by equality of the callable
        for callbacks in m.callback_map.values():
            for c in [c for c in callbacks if c.callback == callback_func]:
                callbacks.remove(c)

    m.on_cfg_denoiser, m.on_cfg_denoised = add("cfg_denoiser"), add("cfg_denoised")  # :523, :531
    m.on_cfg_after_cfg, m.on_before_ui = add("cfg_after_cfg"), add("before_ui")     # :539, :588
    m.cfg_denoiser_callback, m.cfg_denoised_callback = run("cfg_denoiser"), run("cfg_denoised")
    m.cfg_after_cfg_callback, m.before_ui_callback = run("cfg_after_cfg"), run("before_ui")
    m.remove_callbacks_for_function = remove_callbacks_for_function
    return m


# --- modules.prompt_parser -----------------------------------------------------------------------------

class ScheduledPromptConditioning:  # modules/prompt_parser.py ScheduledPromptConditioning (namedtuple end_at_step, cond)
    def __init__(self, end_at_step, cond):
        self.end_at_step, self.cond = end_at_step, cond


class ComposableScheduledPromptConditioning:  # prompt_parser.py:240
    def __init__(self, schedules, weight=1.0):
        self.schedules, self.weight = schedules, weight


class MulticondLearnedConditioning:  # prompt_parser.py:246
    def __init__(self, shape, batch):
        self.shape, self.batch = shape, batch


class SdConditioning(list):  # prompt_parser.py:139: prompts with the image size (SDXL's size conditioning)
    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__(prompts)
        self.width, self.height, self.is_negative_prompt = width, height, is_negative_prompt


def _at_step(schedules, step):  # the target_index loop of prompt_parser.py:291-296 / 332-336
    for entry in schedules:
        if step <= entry.end_at_step:
            return entry.cond
    return schedules[0].cond


def reconstruct_cond_batch(c, current_step):  # prompt_parser.py:280 (tensor conds)
    return torch.stack([_at_step(schedules, current_step) for schedules in c])


def reconstruct_multicond_batch(c, current_step):  # prompt_parser.py:321: one row per AND sub-prompt, in order
    tensors, conds_list = [], []
    for composable_prompts in c.batch:
        conds = []
        for prompt in composable_prompts:
            conds.append((len(tensors), prompt.weight))
            tensors.append(_at_step(prompt.schedules, current_step))
        conds_list.append(conds)
    return conds_list, torch.stack(tensors)


def conditioning(embeddings, weights=None):
    """MulticondLearnedConditioning of one image per list entry; an entry with several
    embeddings is an AND prompt."""
    batch = []
    for i, entry in enumerate(embeddings):
        entry = entry if isinstance(entry, (list, tuple)) else [entry]
        w = weights[i] if weights else [1.0] * len(entry)
        batch.append([ComposableScheduledPromptConditioning([ScheduledPromptConditioning(1000, e)], wi)
                      for e, wi in zip(entry, w)])
    return MulticondLearnedConditioning((len(batch),), batch)


def unconditioning(embeddings):
    return [[ScheduledPromptConditioning(1000, e)] for e in embeddings]


# --- the model: LatentDiffusion around an ldm UNetModel ------------------------------------------------

class DiffusionWrapper(torch.nn.Module):  # ldm/models/diffusion/ddpm.py DiffusionWrapper (crossattn)
    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = "crossattn"

    def forward(self, x, t, c_crossattn):
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class SDModel(torch.nn.Module):
    """shared.sd_model: apply_model(x, t, cond) with A1111's cond dict, alphas_cumprod, parameterization."""

    def __init__(self, diffusion_model, alphas_cumprod):
        super().__init__()
        self.model = DiffusionWrapper(diffusion_model)
        self.register_buffer("alphas_cumprod", alphas_cumprod)
        self.parameterization = "eps"
        self.cond_stage_key = "txt"
        self.embeddings = {}  # text -> (tokens, dim): the "text encoder" of get_learned_conditioning
        self.cond_stage_model = TextModel([])  # the hijacked CLIP's tokenizer (sd_hijack.py); its words come as seen
        self.encoded = []

    def get_learned_conditioning(self, prompts):  # LatentDiffusion.get_learned_conditioning: one row per prompt
        self.encoded.append(prompts)
        return torch.stack([self.embeddings[text] for text in prompts])

    def apply_model(self, x, t, cond):  # LatentDiffusion.apply_model with conditioning_key "crossattn"
        return self.model(x, t, c_crossattn=cond["c_crossattn"])


class PromptChunk:  # modules/sd_hijack_clip.py:10: 77 tokens, <|startoftext|> first
    def __init__(self, tokens):
        self.tokens, self.multipliers, self.fixes = tokens, [1.0] * len(tokens), []


class WordTokenizer:
    """The CLIPTokenizer calls word lookup makes: one id per word, pieces ending in </w>."""

    def __init__(self, words):
        self.ids = {w: i + 1 for i, w in enumerate(words)}
        self.pieces = {i: f"{w}</w>" for w, i in self.ids.items()}

    def convert_ids_to_tokens(self, token):
        return self.pieces.get(token, "<|endoftext|>")


class TextModel:
    """FrozenCLIPEmbedderWithCustomWords (sd_hijack_clip.py): tokenize (:59/:346, ids without
    specials) and tokenize_line (:81, chunks of 75 text tokens between start and end, padded with end)."""
    id_start, id_end = 0, 10_000

    def __init__(self, words):
        self.wrapped = types.SimpleNamespace(tokenizer=WordTokenizer(words))

    def tokenize(self, texts):
        tok = self.wrapped.tokenizer
        for w in (w for text in texts for w in text.split() if w not in tok.ids):  # any text tokenizes
            tok.ids[w] = len(tok.ids) + 1
            tok.pieces[tok.ids[w]] = f"{w}</w>"
        return [[tok.ids[w] for w in text.split()] for text in texts]

    def tokenize_line(self, line):
        ids = self.tokenize([line])[0]
        chunks = [ids[i:i + 75] for i in range(0, max(len(ids), 1), 75)]
        return [PromptChunk([self.id_start] + c + [self.id_end] * (76 - len(c))) for c in chunks], len(ids)


class CompVisDenoiser(torch.nn.Module):
    """k_diffusion/external.py:131 CompVisDenoiser (DiscreteEpsDDPMDenoiser :87, DiscreteSchedule :41): returns x0."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model
        self.sigmas = ((1 - model.alphas_cumprod) / model.alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma):  # external.py:66, quantize=False: log-sigma interpolation
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).view(sigma.shape)

    def forward(self, input, sigma, **kwargs):  # external.py:110: c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1)
        s = sigma.reshape(-1, 1, 1, 1)
        eps = self.inner_model.apply_model(input / (s ** 2 + 1) ** 0.5, self.sigma_to_t(sigma), **kwargs)
        return input - eps * s


class CompVisTimestepsDenoiser(torch.nn.Module):  # modules/sd_samplers_timesteps.py:25-31: returns eps
    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


# --- CFGDenoiser ----------------------------------------------------------------------------------------

class CFGDenoiser(torch.nn.Module):
    """modules/sd_samplers_cfg_denoiser.py:33 CFGDenoiser, forward (:156) for non-edit models
    without masks and refiner; opts.batch_cond_uncond picks one UNet call or chunks of
    batch_size rows (:248-271); s_min_uncond > 0 skips the uncond rows (:224-231)."""

    def __init__(self, shared, sampler, callbacks):
        super().__init__()
        self.shared, self.sampler, self.callbacks = shared, sampler, callbacks
        self.model_wrap, self.p, self.step, self.total_steps = None, None, 0, None
        self.cond_scale_miltiplier = 1.0

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):  # :74
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def get_pred_x0(self, x_in, x_out, sigma):  # :90
        return x_out

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        conds_list, tensor = reconstruct_multicond_batch(cond, self.step)  # :168
        uncond = reconstruct_cond_batch(uncond, self.step)                  # :169
        batch_size = len(conds_list)
        repeats = [len(conds_list[i]) for i in range(batch_size)]
        make_condition_dict = lambda c_crossattn, c_concat: {"c_crossattn": [c_crossattn], "c_concat": [c_concat]}  # :192-200
        x_in = torch.cat([torch.stack([x[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [x])              # :203
        sigma_in = torch.cat([torch.stack([sigma[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [sigma])
        image_cond_in = torch.cat([torch.stack([image_cond[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [image_cond])
        params = CFGDenoiserParams(x_in, image_cond_in, sigma_in, self.shared.state.sampling_step,
                                   self.shared.state.sampling_steps, tensor, uncond, self)                       # :211
        self.callbacks.cfg_denoiser_callback(params)
        x_in, image_cond_in, sigma_in, tensor, uncond = params.x, params.image_cond, params.sigma, params.text_cond, params.text_uncond
        skip_uncond = self.step % 2 and s_min_uncond > 0 and sigma[0] < s_min_uncond                            # :224
        if skip_uncond:
            x_in, sigma_in = x_in[:-batch_size], sigma_in[:-batch_size]
        cond_in = tensor if skip_uncond else torch.cat([tensor, uncond])                                        # :240-246
        if self.shared.opts.batch_cond_uncond:                                                                   # :248
            x_out = self.inner_model(x_in, sigma_in, cond=make_condition_dict(cond_in, image_cond_in))
        else:                                                                                                    # :250
            x_out = torch.zeros_like(x_in)
            for a in range(0, x_out.shape[0], batch_size):
                b = a + batch_size
                x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b], cond=make_condition_dict(cond_in[a:b], image_cond_in[a:b]))
        denoised_image_indexes = [c[0][0] for c in conds_list]                                                  # :273
        if skip_uncond:
            x_out = torch.cat([x_out, torch.cat([x_out[i:i + 1] for i in denoised_image_indexes])])
        self.callbacks.cfg_denoised_callback(CFGDenoisedParams(x_out, self.shared.state.sampling_step,
                                                               self.shared.state.sampling_steps, self.inner_model))  # :278
        denoised = self.combine_denoised(x_out, conds_list, uncond, 1.0 if skip_uncond else cond_scale * self.cond_scale_miltiplier)  # :284-289
        self.sampler.last_latent = self.get_pred_x0(torch.cat([x_in[i:i + 1] for i in denoised_image_indexes]),
                                                    torch.cat([x_out[i:i + 1] for i in denoised_image_indexes]), sigma)  # :295
        after = AfterCFGCallbackParams(denoised, self.shared.state.sampling_step, self.shared.state.sampling_steps)  # :306
        self.callbacks.cfg_after_cfg_callback(after)
        self.step += 1
        return after.x


class CFGDenoiserKDiffusion(CFGDenoiser):  # modules/sd_samplers_kdiffusion.py:52
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisDenoiser(self.shared.sd_model)
        return self.model_wrap


class CFGDenoiserTimesteps(CFGDenoiser):  # modules/sd_samplers_timesteps.py:47
    def __init__(self, shared, sampler, callbacks):
        super().__init__(shared, sampler, callbacks)
        self.alphas = shared.sd_model.alphas_cumprod

    def get_pred_x0(self, x_in, x_out, sigma):  # sd_samplers_timesteps.py:56
        a_t = self.alphas[sigma.to(dtype=int)][:, None, None, None]
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisTimestepsDenoiser(self.shared.sd_model)
        return self.model_wrap


# --- samplers --------------------------------------------------------------------------------------------

class SamplerData:  # sd_samplers_common.py:14 (name, constructor, aliases, options): what create_sampler attaches
    def __init__(self, name):
        self.name, self.aliases, self.options = name, [], {}


class Sampler:
    """sd_samplers_common.Sampler (:230) made as sd_samplers.create_sampler (:33-44) makes it for
    the sampler the user picked (`label`, a key of SAMPLERS): funcname kept as the table gives it
    (:231: a str for k-diffusion, the function itself for the timestep samplers), func looked up
    for a str (sd_samplers_kdiffusion.py:74), config = the SamplerData. initialize (:286) sets
    model_wrap_cfg.p and step, launch_sampling (:265) sets the step counts and turns an interrupt
    into the last latent. tests/a1111/test_double_agrees.py holds SAMPLERS against the real tables."""

    def __init__(self, shared, callbacks, label):
        kind, funcname = SAMPLERS[label]
        self.shared, self.funcname, self.config = shared, funcname, SamplerData(label)
        self.func = funcname if callable(funcname) else K_SAMPLING[funcname]
        denoiser_class = CFGDenoiserKDiffusion if kind == "k-diffusion" else CFGDenoiserTimesteps
        self.model_wrap_cfg = denoiser_class(shared, self, callbacks)
        self.sampler_extra_args, self.last_latent = None, None

    def launch(self, p, x, steps, total_steps, conditioning, unconditioning, run):
        self.model_wrap_cfg.p, self.model_wrap_cfg.step = p, 0
        self.model_wrap_cfg.steps, self.model_wrap_cfg.total_steps = steps, total_steps
        self.shared.state.sampling_steps, self.shared.state.sampling_step = steps, 0
        b = x.shape[0]
        self.sampler_extra_args = {"cond": conditioning, "image_cond": x.new_zeros(b, 5, 1, 1), "uncond": unconditioning,
                                   "cond_scale": p.cfg_scale, "s_min_uncond": getattr(p, "s_min_uncond", 0.0)}
        self.last_latent = x
        try:
            return run(x)
        except Interrupted:
            return self.last_latent

    def callback_state(self, i):  # sd_samplers_common.py:256
        if self.shared.state.interrupt_at is not None and i >= self.shared.state.interrupt_at:
            raise Interrupted
        self.shared.state.sampling_step = i


class Interrupted(BaseException):  # sd_samplers_common.py:142 InterruptedException
    pass


def sample_euler(model, x, sigmas=None, extra_args=None, callback=None):  # k_diffusion/sampling.py:118 (s_churn = 0)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        callback(i)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def ddim_timesteps(steps):  # sd_samplers_timesteps.py:86 get_timesteps
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def ddim(model, x, timesteps=None, extra_args=None, callback=None):  # modules/sd_samplers_timesteps_impl.py:11, eta = 0
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    s_in = x.new_ones((x.shape[0]))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        pred_x0 = (x - math.sqrt(1 - a_t) * e_t) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev) * e_t
        callback(i)
    return x


sample_ddim = ddim
K_SAMPLING = {"sample_euler": sample_euler}  # k_diffusion.sampling, by name
# label -> (kind, funcname as the real tables hand it to the constructor): sd_samplers_kdiffusion.py:14-36,
# sd_samplers_timesteps.py:11-16
SAMPLERS = {"Euler": ("k-diffusion", "sample_euler"), "DDIM": ("timesteps", ddim)}


# --- modules.scripts and processing ------------------------------------------------------------------------

AlwaysVisible = object()  # modules/scripts.py:14


class Script:  # modules/scripts.py:52 (the hooks the pack uses; defaults do nothing)
    args_from = args_to = None
    infotext_fields = paste_field_names = None

    def process(self, p, *args): pass
    def process_before_every_sampling(self, p, *args, **kwargs): pass
    def postprocess_batch(self, p, *args, **kwargs): pass
    def postprocess(self, p, processed, *args): pass


class ScriptRunner:
    """modules/scripts.py:578 initialize_scripts / :634 create_script_ui (args_from/args_to
    slices of the flat args) and the hook runners (:820-880): each hook gets
    p.script_args[args_from:args_to]; an exception is reported, generation goes on."""

    def __init__(self, script_classes, is_img2img=False):
        self.scripts, self.inputs, self.errors = [], [None], []  # inputs[0]: the dropdown script (none)
        for cls in script_classes:
            script = cls()
            if script.show(is_img2img) is not AlwaysVisible:
                continue
            script.args_from = len(self.inputs)
            self.inputs.extend(script.ui(is_img2img))
            script.args_to = len(self.inputs)
            self.scripts.append(script)

    def defaults(self):
        return [None] + [c.value for c in self.inputs[1:]]

    def _run(self, hook, p, *extra, **kwargs):
        for script in self.scripts:
            try:
                getattr(script, hook)(p, *extra, *p.script_args[script.args_from:script.args_to], **kwargs)
            except Exception as e:
                self.errors.append((hook, e))

    def process(self, p): self._run("process", p)                                          # :828
    def process_before_every_sampling(self, p, **kw): self._run("process_before_every_sampling", p, **kw)  # :836
    def postprocess_batch(self, p, images, **kw): self._run("postprocess_batch", p, images=images, **kw)   # :876
    def postprocess(self, p, processed): self._run("postprocess", p, processed)             # :868


class Processing:
    """The StableDiffusionProcessing fields and close() the scripts touch."""

    def __init__(self, sd_model, runner, script_args, cfg_scale=7.5, steps=4, prompt="a prompt"):
        self.sd_model, self.scripts, self.script_args = sd_model, runner, script_args
        self.cfg_scale, self.steps, self.prompt = cfg_scale, steps, prompt
        self.extra_generation_params, self.is_hr_pass, self.closed = {}, False, False

    def close(self):  # processing.py StableDiffusionProcessing.close
        self.closed = True


def process_images(p, x, sample, hires=None):
    """modules/txt2img.py:105 `with closing(p)` around processing.py:863 process_images_inner:
    scripts.process (:915), then per batch process_before_every_sampling (:1338), sampling,
    with hires fix a second process_before_every_sampling (:1446, p.is_hr_pass set at :1368)
    and pass, postprocess_batch (:1017); postprocess (:1148)."""
    with closing(p):
        p.scripts.process(p)
        p.scripts.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
        samples = sample(x)
        if hires is not None:
            p.is_hr_pass = True
            second = samples.clone()
            p.scripts.process_before_every_sampling(p, x=second, noise=second, c=None, uc=None)
            samples = hires(second)
            p.is_hr_pass = False
        p.scripts.postprocess_batch(p, [samples], batch_number=0)
        p.scripts.postprocess(p, types.SimpleNamespace(images=[samples]))
    return samples


# --- gradio and modules.ui_components ---------------------------------------------------------------------

class Component:
    def __init__(self, kind, **kwargs):
        self.kind, self.kwargs, self.value = kind, kwargs, kwargs.get("value")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _gradio():
    gr = types.ModuleType("gradio")
    for kind in ("Slider", "Number", "Textbox", "Dropdown", "Checkbox", "Group", "Row"):
        setattr(gr, kind, lambda kind=kind, **kw: Component(kind, **kw))
    return gr


def _ui_components():  # modules/ui_components.py InputAccordion: a checkbox whose value is the enabled flag
    m = types.ModuleType("modules.ui_components")
    m.InputAccordion = lambda value, **kw: Component("InputAccordion", value=value, **kw)
    return m


# --- install -------------------------------------------------------------------------------------------------

class Host:
    """The installed double: .callbacks, .scripts, .shared, and sampling helpers."""

    def __init__(self, modules):
        self.modules = modules
        self.callbacks = modules["modules.script_callbacks"]
        self.scripts = modules["modules.scripts"]
        self.shared = modules["modules.shared"]


def install(sd_model=None):
    saved = {name: sys.modules.get(name) for name in NAMES}
    modules = {name: types.ModuleType(name) for name in ("modules", "modules.scripts", "modules.shared", "modules.prompt_parser")}
    modules["modules.script_callbacks"] = _callbacks_module()
    modules["modules.ui_components"] = _ui_components()
    modules["gradio"] = _gradio()
    scripts = modules["modules.scripts"]
    scripts.Script, scripts.AlwaysVisible, scripts.scripts_data = Script, AlwaysVisible, []
    pp = modules["modules.prompt_parser"]
    pp.reconstruct_multicond_batch, pp.reconstruct_cond_batch = reconstruct_multicond_batch, reconstruct_cond_batch
    pp.SdConditioning = SdConditioning
    shared = modules["modules.shared"]
    shared.sd_model = sd_model
    shared.opts = types.SimpleNamespace(batch_cond_uncond=True)
    shared.state = types.SimpleNamespace(sampling_step=0, sampling_steps=0, interrupt_at=None)
    for name in ("scripts", "script_callbacks", "shared", "prompt_parser", "ui_components"):
        setattr(modules["modules"], name, modules[f"modules.{name}"])
    sys.modules.update(modules)
    host = Host(modules)
    host.saved = saved
    return host


def uninstall(host):
    for name, module in host.saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
