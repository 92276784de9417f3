"""MultiDiffusion panorama on plain A1111: the pass's CFGDenoiser gets an instance forward
that denoises overlapping windows of the latent and blends them (guidance.panorama).

Each window batch goes through the whole CFGDenoiser.forward (modules/sd_samplers_cfg_denoiser.py:156),
so CFG, the CFG callbacks and every AttnGuide method (SAG, PAG, SEGA) act per window, as the
ComfyUI node runs them per window. The denoiser's step counter is held at the sampler's
step for every window. Blending the outputs is exact for both inner models: the windows
of one call share sigma/timestep, and eps and x0 are affine in each other there.
"""
from ....guidance import panorama as pano
from ....methods.build import Target
from ....methods.panorama import build
from .forward import InstanceForward
from ..errors import NotServed

TITLE = "MultiDiffusion Panorama (AttnGuide)"
RATIO = 8  # pixels per latent position of the SD1/SD2/SDXL VAE


def install(session, **params):
    p = session.p
    native = 128 if getattr(p.sd_model, "is_sdxl", False) else 64
    try:
        plan = build(Target("panorama", latent_scale=RATIO, native_window=native), **params)
    except ValueError as e:
        raise ValueError(f"{TITLE}: {e}") from None
    pano.layout(*session.x.shape[-2:], plan.window, plan.stride, plan.wrap)  # sizes it cannot tile raise now
    if getattr(p, "mask", None) is not None:
        raise NotServed(f"{TITLE}: inpainting (a mask) is not supported with the panorama; it is off for this image.")
    denoiser = p.sampler.model_wrap_cfg
    if isinstance(denoiser.__dict__.get("forward"), _Tiler):
        raise ValueError(f"{TITLE}: the panorama is already on for this pass")
    tiler = _Tiler(session, denoiser, plan.window, plan.stride, plan.wrap, plan.weights, plan.batch)
    denoiser.forward = tiler
    session.on_close(tiler.remove)


class _Tiler(InstanceForward):
    def __init__(self, session, denoiser, window, stride, wrap, weights, batch):
        super().__init__(denoiser)
        self.session, self.denoiser = session, denoiser
        self.window, self.stride, self.wrap, self.weights, self.batch = window, stride, wrap, weights, batch

    def __call__(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        d, session = self.denoiser, self.session
        windows = pano.layout(*x.shape[-2:], self.window, self.stride, self.wrap)
        weight = pano.window_weight(windows[0].height, windows[0].width, self.weights)
        spatial = image_cond.shape[-2:] == x.shape[-2:]
        step, blend = d.step, pano.Blend(x)
        try:
            for i in range(0, len(windows), self.batch):
                group = windows[i:i + self.batch]
                n = len(group)
                d.step, session.window, session.window_cond = step, i, _repeat(cond, n)
                ic = pano.crop(image_cond, group) if spatial else image_cond.repeat((n,) + (1,) * (image_cond.ndim - 1))
                out = self.previous(pano.crop(x, group), sigma.repeat(n), uncond * n, session.window_cond, cond_scale,
                                    s_min_uncond, ic)
                blend.add(out, group, weight)
        finally:
            d.step, session.window, session.window_cond = step + 1, None, None
        result = blend.result()
        d.sampler.last_latent = d.get_pred_x0(x, result, sigma)  # what an interrupt returns: the whole image
        return result


def _repeat(cond, n):
    """A MulticondLearnedConditioning (modules/prompt_parser.py:246) for n windows of the batch, window-major."""
    return type(cond)((len(cond.batch) * n,) + tuple(cond.shape[1:]), cond.batch * n)
