"""The img2img pieces of the A1111 double (a1111_double.py) that Pix2Pix-Zero's script touches,
each mirroring A1111 v1.10.1 (@82a973c0): the k-diffusion sampler's sample_img2img and
get_sigmas, sd_samplers_common.setup_img2img_steps, and the img2img sample() that calls
process_before_every_sampling right before sample_img2img."""
import sys
import types
from contextlib import closing

import torch

import a1111_double as a1


class InterruptedException(BaseException):  # modules/sd_samplers_common.py:142
    pass


def setup_img2img_steps(p, steps=None):  # modules/sd_samplers_common.py:22-31 (opts.img2img_fix_steps off)
    if steps is not None:
        requested = steps or p.steps
        steps = int(requested / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        return steps, requested - 1
    return p.steps, int(min(p.denoising_strength, 0.999) * p.steps)


def install_common(host):
    """modules.sd_samplers_common with the two names the script reads."""
    common = types.ModuleType("modules.sd_samplers_common")
    common.setup_img2img_steps, common.InterruptedException = setup_img2img_steps, InterruptedException
    host.saved.setdefault("modules.sd_samplers_common", sys.modules.get("modules.sd_samplers_common"))
    sys.modules["modules.sd_samplers_common"] = common
    host.modules["modules"].sd_samplers_common = common
    host.shared.state.interrupted = host.shared.state.skipped = False


class KDiffusionSampler(a1.Sampler):
    """modules/sd_samplers_kdiffusion.py:67 KDiffusionSampler with a given sigma schedule."""

    def __init__(self, shared, callbacks, label, sigmas):
        super().__init__(shared, callbacks, label)
        self.schedule = sigmas

    def get_sigmas(self, p, steps):  # :79 (the schedule of `steps` steps; here the one given)
        assert steps == len(self.schedule) - 1
        return torch.tensor(self.schedule, dtype=torch.float32)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = setup_img2img_steps(p, steps)                   # :135
        sigma_sched = self.get_sigmas(p, steps)[steps - t_enc - 1:]    # :137-138
        xi = x + noise * sigma_sched[0]                                # :143 (no add_noise_to_latent, extra noise 0)
        self.model_wrap_cfg.init_latent = x                            # :174

        def run(xi):                                                   # :184 self.func(..., sigmas=sigma_sched)
            return self.func(self.model_wrap_cfg, xi, extra_args=self.sampler_extra_args, callback=self.callback_state,
                             sigmas=sigma_sched)

        return self.launch(p, xi, t_enc + 1, t_enc + 1, conditioning, unconditional_conditioning, run)


def process_img2img(p, init_latent, noise):
    """modules/img2img.py:225 `with closing(p)` around processing.py process_images_inner:
    scripts.process (:915), then StableDiffusionProcessingImg2Img.sample (:1759-1774):
    process_before_every_sampling(x=init_latent, noise=x), sampler.sample_img2img;
    postprocess_batch (:1017), postprocess (:1148)."""
    with closing(p):
        p.scripts.process(p)
        p.scripts.process_before_every_sampling(p, x=init_latent, noise=noise, c=None, uc=None)
        with torch.no_grad():
            samples = p.sampler.sample_img2img(p, init_latent, noise, p.c, p.uc, image_conditioning=p.image_conditioning)
        p.scripts.postprocess_batch(p, [samples], batch_number=0)
        p.scripts.postprocess(p, types.SimpleNamespace(images=[samples]))
    return samples
