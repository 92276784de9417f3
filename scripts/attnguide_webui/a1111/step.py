"""One A1111 sampler evaluation as the methods see it: the row layout of CFGDenoiser's
main batch with the methods' rows (Step), and the step in sigma space per image (StepData),
what a ComfyUI post-CFG function gets as its args."""
import logging

import torch

from ....attention.router import UNCOND
from ..webui_text import cross_attention_text

_LOG = logging.getLogger("attnguide")


def rows_of(cond):
    return cross_attention_text(cond).shape[0]


def tokens_of(cond):
    return cross_attention_text(cond).shape[1]


def tile_rows(cond, n):
    """cond's rows repeated n times (the batch of n panorama windows of every image)."""
    if n == 1:
        return cond
    if isinstance(cond, dict):
        return {k: v.repeat((n,) + (1,) * (v.ndim - 1)) for k, v in cond.items()}
    return cond.repeat((n,) + (1,) * (cond.ndim - 1))


def take_rows(cond, index):
    return {k: v[index] for k, v in cond.items()} if isinstance(cond, dict) else cond[index]


def cat_rows(parts):
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


class Step:
    """One CFGDenoiser.forward: the row layout of its main batch and what the methods need."""

    def __init__(self, ctx, denoiser, space, conds_list, n_cond, n_images):
        self.ctx, self.denoiser, self.space = ctx, denoiser, space
        self.conds_list, self.n_cond, self.n_images = conds_list, n_cond, n_images
        self.roles = []
        self.blocks = {}        # role -> slice of rows added for that method
        self.separate = {}      # role -> text of rows run in a UNet call of their own
        self.separate_out = {}
        self.cursor = 0
        self.x_in = self.sigma_in = self.image_cond = self.text_cond = self.text_uncond = None
        self.x_out = self.inner_model = None

    @property
    def uncond_rows(self):
        return slice(len(self.roles) - self.n_images, len(self.roles))

    @property
    def first_cond_rows(self):
        return [conds[0][0] for conds in self.conds_list]


class StepData:
    """The step in sigma space, per image: what a ComfyUI post-CFG function gets as args; the Step a
    method's post_cfg sees (methods/build.py)."""

    def __init__(self, session, step, cfg_result):
        self.session, self.step, self.ctx = session, step, step.ctx
        space = step.space
        rows = step.uncond_rows
        self.x_model, self.t = step.x_in[rows], step.sigma_in[rows]   # uncond rows: each image's x
        self.x = space.x(self.x_model, self.t)
        self.sigma = space.sigma(self.t).flatten()
        self.denoised = space.denoised(self.x_model, self.t, cfg_result)
        self.uncond_denoised = space.denoised(self.x_model, self.t, step.x_out[rows])
        self.cond_denoised = self.combined(slice(0, step.n_cond))

    @property
    def timestep(self):
        """The UNet timestep of this step (for schedules over timesteps)."""
        return self.step.space.timestep(self.t, self.step.inner_model)

    def combined(self, rows):
        """Rows laid out like the cond rows, in sigma space, combined per image with the AND
        weights at CFG scale 1 (= the row itself for a plain prompt)."""
        step = self.step
        out = step.space.denoised(step.x_in[rows], step.sigma_in[rows], step.x_out[rows])
        combined = self.uncond_denoised.clone()
        for i, conds in enumerate(step.conds_list):
            for index, weight in conds:
                combined[i] += (out[index] - self.uncond_denoised[i]) * weight
        return combined

    def block(self, role):
        rows = self.step.blocks.get(role)
        return None if rows is None else self.combined(rows)

    def image_rows(self, role):
        """A method's own rows (one per image, at each image's x), denoised; None if absent."""
        step = self.step
        rows = step.first_cond_rows
        out = step.x_out[step.blocks[role]] if role in step.blocks else step.separate_out.get(role)
        return None if out is None else step.space.denoised(step.x_in[rows], step.sigma_in[rows], out)

    def first_cond_denoised(self):
        step = self.step
        rows = step.first_cond_rows
        return step.space.denoised(step.x_in[rows], step.sigma_in[rows], step.x_out[rows])

    def branch_rows(self, branch):
        """Global row indices of each image's uncond row, or of its first cond row."""
        if branch == UNCOND:
            return list(range(len(self.step.roles)))[self.step.uncond_rows]
        return self.step.first_cond_rows

    def run_extra(self, branch, x):
        """One more UNet pass on the rows of `branch` (UNCOND or COND) at latent x (sigma
        space); no router hook touches it. Returns the denoised prediction."""
        step = self.step
        rows = self.branch_rows(branch)
        text = step.text_uncond if branch == UNCOND else take_rows(step.text_cond, rows)
        t, image_cond = step.sigma_in[rows], step.image_cond[rows]
        x_model = step.space.model_x(x, t)
        out = step.inner_model(x_model, t, cond=make_condition_dict(self.session.p.sd_model, text, image_cond))
        return step.space.denoised(x_model, t, out)

    # The rest of the Step of methods/build.py.

    def copies(self, key):
        return self.block(key)

    def rows(self, role):
        return self.image_rows(role)

    def branch_denoised(self, branch):
        return self.uncond_denoised if branch == UNCOND else self.first_cond_denoised()

    def branch_labels(self, branch):
        return self.branch_rows(branch)

    def run_state(self, key):
        return self.session.run_state(key)

    def warn(self, message):
        warned = self.session.run_state("warned").setdefault("messages", set())
        if message not in warned:
            warned.add(message)
            _LOG.warning(message)


def make_condition_dict(sd_model, text, image_cond):
    """The cond argument of the inner model, as CFGDenoiser.forward builds it
    (modules/sd_samplers_cfg_denoiser.py:192-200)."""
    if sd_model.model.conditioning_key == "crossattn-adm":
        return {"c_crossattn": [text], "c_adm": image_cond}  # uncond rows already hold zeros there
    if isinstance(text, dict):
        return {**text, "c_concat": [image_cond]}
    return {"c_crossattn": [text], "c_concat": [image_cond]}
