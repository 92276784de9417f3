"""Routes a plain A1111 (>= 1.10) UNet's self-attention through attention.router for one
sampling pass; the counterpart of comfyui/router.py.

A1111 runs every sampler evaluation through CFGDenoiser.forward
(modules/sd_samplers_cfg_denoiser.py:156): the cond rows (one per AND sub-prompt) first,
the uncond rows last, in one or more UNet calls, with on_cfg_denoiser before the calls,
on_cfg_denoised after them and on_cfg_after_cfg after CFG. A Session
  * on_cfg_denoiser: opens the step (StepContext) and inserts the methods' extra rows
    (router.extend_main_batch) between the cond and the uncond rows, where CFG never
    looks (combine_denoised indexes cond rows from the front and uncond from the back);
  * labels every UNet call's rows with their global row index (a forward pre-hook on the
    diffusion model takes the next rows of the step's layout, in the order A1111 runs
    its chunks), so Router.attend sees each row's role;
  * on_cfg_denoised: keeps the model outputs (extra rows included) and the inner model;
  * on_cfg_after_cfg: converts to sigma space, runs the methods' guidance on the CFG
    result in installation order, and converts back.
Self-attention is routed by an instance `forward` on the chosen attn1 modules; it hands
rows no hook claims to whatever forward was there before (the optimisation's class
forward or another extension's instance forward), so other hooks keep working.
close() removes every hook handle and callback; a wrapper that someone else has wrapped
since is switched to pass-through instead of being pulled out from under them.
"""
import logging

import torch
import torch.nn.functional as F

from ....attention.math import merge_heads, split_heads
from ....attention.router import COND, ROLES_KEY, STEP_KEY, UNCOND, Router
from .forward import InstanceForward
from .space import space_for
from .step import Step, StepData, cat_rows, make_condition_dict, rows_of, take_rows, tile_rows, tokens_of

_LOG = logging.getLogger("attnguide")
SESSION_ATTR = "_attnguide_session"


def attn1_module(diffusion_model, layer, name="attn1"):
    """The attn1 (or attn2) module of a Layer in an ldm/sgm UNetModel."""
    blocks = {"input": diffusion_model.input_blocks, "middle": [diffusion_model.middle_block],
              "output": diffusion_model.output_blocks}[layer.kind]
    for module in blocks[layer.block]:
        transformers = getattr(module, "transformer_blocks", None)
        if transformers is not None:
            return getattr(transformers[layer.depth], name)
    raise ValueError(f"layer {layer} has no attention in this model")


def sdpa(q, k, v, heads):
    """The kernel for hooked rows that call on: what A1111's sdp optimisation computes."""
    return merge_heads(F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)))


def session_for(p, x):
    """The session of p's sampling pass that starts from latent x (one per pass: hires fix
    and every batch start a new one, closing the previous)."""
    session = getattr(p, SESSION_ATTR, None)
    if session is not None and session.x is x and not session.closed:
        return session
    close_session(p)
    session = Session(p, x)
    setattr(p, SESSION_ATTR, session)
    _close_with(p)
    return session


def close_session(p):
    session = getattr(p, SESSION_ATTR, None)
    if session is not None:
        session.close()
        setattr(p, SESSION_ATTR, None)


class _CloseSessionFirst:
    """p.close() that closes the session first; A1111 closes p in a `with closing(p)` around
    the whole generation (modules/txt2img.py:105, img2img.py:225, api/api.py:468/538), also on error."""

    def __init__(self, p, original):
        self.p, self.original = p, original

    def __call__(self):
        try:
            close_session(self.p)
        finally:
            self.original()


def _close_with(p):
    if not isinstance(p.__dict__.get("close"), _CloseSessionFirst):
        p.close = _CloseSessionFirst(p, p.close)


class _RoutedForward(InstanceForward):
    """Instance forward of one attn1 module."""

    def __init__(self, session, module, layer):
        super().__init__(module)
        self.session, self.layer = session, layer

    def __call__(self, x, *args, **kwargs):
        session = self.session
        options = session.options if session is not None else None
        context = kwargs.get("context", args[0] if args else None)
        mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
        if options is None or context is not None or mask is not None or x.shape[0] != len(options["cond_or_uncond"]):
            return self.previous(x, *args, **kwargs)
        router, ctx, roles = session.router, options[STEP_KEY], options[ROLES_KEY]
        labels = options["cond_or_uncond"]
        chains = [router.chain(self.layer, roles[label], ctx) for label in labels]
        if not any(chains):
            return self.previous(x, *args, **kwargs)
        outs, start = [], 0
        while start < len(labels):
            end = start + 1
            while end < len(labels) and chains[end] == chains[start]:
                end += 1
            part = x[start:end]
            if not chains[start]:
                outs.append(self.previous(part, *args, **kwargs))
            else:
                outs.append(self._routed(part, {**options, "cond_or_uncond": labels[start:end]}, router))
            start = end
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _routed(self, x, options, router):
        m = self.module
        heads = m.heads
        out = router.attend(m.to_q(x), m.to_k(x), m.to_v(x), heads, self.layer, options,
                            lambda q, k, v, labels: sdpa(q, k, v, heads))
        return m.to_out(out)


class Session:
    def __init__(self, p, x):
        from modules import script_callbacks
        self.p, self.x = p, x
        self.unet = p.sd_model.model.diffusion_model
        self.router = Router()
        self.posts = []           # (method key, fn(StepData) -> denoised)
        self.routed = {}          # Layer -> _RoutedForward
        self.handles = []
        self.options = None       # the running UNet call's row labels and roles, or None
        self.step = None
        self.window = None        # the window batch being denoised (panorama), for per-window state
        self.window_cond = None   # and the prompt conditioning of its rows
        self.runs = {}
        self.closers = []
        self.closed = False
        self.callbacks = script_callbacks
        _close_stale(self.unet)
        self.handles.append(self.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True))
        self.handles.append(self.unet.register_forward_hook(self._after_unet))
        script_callbacks.on_cfg_denoiser(self._on_denoiser, name="attnguide")
        script_callbacks.on_cfg_denoised(self._on_denoised, name="attnguide")
        script_callbacks.on_cfg_after_cfg(self._on_after_cfg, name="attnguide")

    def method_key(self, name):
        return f"{name}.{len(self.router.methods)}"

    def add(self, method, post):
        """Install an attention.router Method and its guidance fn(StepData) -> denoised."""
        self.router = self.router.with_method(method)
        self.posts.append((method.key, post))
        for layer in sorted({l for h in method.hooks for l in h.layers} - set(self.routed)):
            module = attn1_module(self.unet, layer)
            routed = _RoutedForward(self, module, layer)
            module.forward = routed
            self.routed[layer] = routed

    def posts_keys(self):
        return [key for key, _ in self.posts]

    def run_state(self, key):
        """State a method keeps across the pass's steps (SEGA's momentum): one per window batch."""
        return self.runs.setdefault((self.window, key), {})

    def on_close(self, fn):
        self.closers.append(fn)

    def encode(self, text):
        """`text` for every image of the pass, encoded as A1111 encodes prompts (emphasis,
        embeddings; SDXL size conditioning), as modules/processing.py:494/1503 build the prompts."""
        from modules import prompt_parser
        height, width = (8 * s for s in self.x.shape[-2:])  # this pass's image size (hires: the upscaled one)
        prompts = prompt_parser.SdConditioning([text] * self.x.shape[0], width=width, height=height)
        with torch.no_grad():
            return self.p.sd_model.get_learned_conditioning(prompts)

    def close(self):
        if self.closed:
            return
        self.closed = True
        for handle in self.handles:
            handle.remove()
        for routed in self.routed.values():
            routed.remove()
            routed.session = None  # wrapped by someone since: stays in their chain, passes through
        for fn in (self._on_denoiser, self._on_denoised, self._on_after_cfg):
            self.callbacks.remove_callbacks_for_function(fn)
        for fn in self.closers:
            fn()
        self.step = self.options = None

    # --- UNet calls ---------------------------------------------------------------------------------

    def _before_unet(self, module, args, kwargs):
        step = self.step
        x = args[0] if args else kwargs.get("x")
        n = x.shape[0]
        if step is None or step.cursor + n > len(step.roles):
            self.options = None
            return
        self.options = {"cond_or_uncond": list(range(step.cursor, step.cursor + n)),
                        STEP_KEY: step.ctx, ROLES_KEY: step.roles}
        step.cursor += n

    def _after_unet(self, module, args, output):
        self.options = None

    # --- CFGDenoiser callbacks ------------------------------------------------------------------------

    def _ours(self, denoiser):
        return not self.closed and denoiser is not None and getattr(denoiser, "p", None) is self.p

    def _on_denoiser(self, params):
        self.step = None
        d = params.denoiser
        if not self._ours(d):
            return
        from modules import prompt_parser
        n_cond, n_images = rows_of(params.text_cond), rows_of(params.text_uncond)
        if n_cond + n_images != params.x.shape[0]:
            _LOG.warning("attnguide: this model's batch has %d rows for %d cond and %d uncond rows (an "
                         "InstructPix2Pix model?); AttnGuide methods skip this step.", params.x.shape[0], n_cond, n_images)
            return
        space = space_for(d)
        sigma = float(space.sigma(params.sigma[-1:]).flatten()[0])
        cfg = float(d.sampler.sampler_extra_args.get("cond_scale", 1.0)) * float(getattr(d, "cond_scale_miltiplier", 1.0))
        ctx = self.router.begin_step_at(d.step, max(int(d.total_steps or 1), 1), sigma, cfg)
        cond = self.window_cond if self.window_cond is not None else d.sampler.sampler_extra_args["cond"]
        conds_list, _ = prompt_parser.reconstruct_multicond_batch(cond, d.step)
        if len(conds_list) != n_images or sum(map(len, conds_list)) != n_cond:
            _LOG.warning("attnguide: the prompt's conditioning does not match this step's batch (another extension "
                         "changed it?); AttnGuide methods skip this step.")
            return
        step = Step(ctx, d, space, conds_list, n_cond, n_images)
        blocks, block_roles = self.router.extend_main_batch(ctx, [COND, UNCOND])
        cond_rows = list(range(n_cond))
        x, sigma_in, image_cond, text = [params.x[:n_cond]], [params.sigma[:n_cond]], \
            [params.image_cond[:n_cond]], [take_rows(params.text_cond, slice(0, n_cond))]
        step.roles = [COND] * n_cond
        for block, role in zip(blocks[2:], block_roles[2:]):
            if block is COND:      # a copy of the cond rows (PAG)
                source, block_text = cond_rows, take_rows(params.text_cond, cond_rows)
            elif n_images % rows_of(block) == 0:  # the method's own text, one row per image (SEGA)
                source, block = step.first_cond_rows, tile_rows(block, n_images // rows_of(block))  # panorama windows
                block_text = block
                if tokens_of(block) != tokens_of(params.text_cond):
                    step.separate[role] = block  # cannot share the batch: own UNet call after the main one
                    continue
            else:
                raise ValueError(f"attnguide: method {role} gave {rows_of(block)} rows for {n_images} images")
            start = len(step.roles)
            step.blocks[role] = slice(start, start + len(source))
            step.roles += [role] * len(source)
            x.append(params.x[source])
            sigma_in.append(params.sigma[source])
            image_cond.append(params.image_cond[source])
            text.append(block_text)
        step.roles += [UNCOND] * n_images
        rest = slice(n_cond, None)
        params.x = step.x_in = torch.cat(x + [params.x[rest]])
        params.sigma = step.sigma_in = torch.cat(sigma_in + [params.sigma[rest]])
        params.image_cond = step.image_cond = torch.cat(image_cond + [params.image_cond[rest]])
        params.text_cond = step.text_cond = cat_rows(text)
        step.text_uncond = params.text_uncond
        self.step = step

    def _on_denoised(self, params):
        step = self.step
        if step is None:
            return
        step.cursor = len(step.roles)  # the main batch is done; later UNet calls are nobody's rows
        step.x_out, step.inner_model = params.x, params.inner_model
        rows = step.first_cond_rows
        for role, text in step.separate.items():
            cond = make_condition_dict(self.p.sd_model, text, step.image_cond[rows])
            step.separate_out[role] = params.inner_model(step.x_in[rows], step.sigma_in[rows], cond=cond)

    def _on_after_cfg(self, params):
        step, self.step = self.step, None
        if step is None or step.x_out is None or not (step.ctx.active & {key for key, _ in self.posts}):
            return
        data = StepData(self, step, params.x)
        denoised = data.denoised
        for key, post in self.posts:
            if key in step.ctx.active:
                data.denoised = denoised = post(data)
        params.x = step.space.output(data.x_model, data.t, denoised)


def _close_stale(unet):
    """Close sessions a failed generation left open (their hooks found by type)."""
    for module in unet.modules():
        routed = module.__dict__.get("forward")
        if isinstance(routed, _RoutedForward) and routed.session is not None:
            routed.session.close()
