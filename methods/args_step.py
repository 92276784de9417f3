"""The Step of methods/build.py over the args of a post-CFG function with ComfyUI's arguments
(ComfyUI, Forge, reForge)."""
from ..attention.router import COND, UNCOND, step_context

LABELS = {COND: 0, UNCOND: 1}  # the cond_or_uncond label of each branch in these hosts' model calls


class ArgsStep:
    """run_extra(args, conds, x) -> predictions of an extra model call; timestep(args) -> the model's
    timestep at args["sigma"] (0-1000); warn(ctx, message) warns once per generation."""

    def __init__(self, args, ctx, run_extra, timestep, warn):
        self.args, self.ctx = args, ctx
        self._run_extra, self._timestep, self._warn = run_extra, timestep, warn
        self.x, self.sigma = args["input"], args["sigma"]
        self.denoised, self.cond_denoised = args["denoised"], args["cond_denoised"]
        self.uncond_denoised = args["uncond_denoised"] if args["uncond"] is not None else None

    @property
    def timestep(self):
        return self._timestep(self.args).flatten()[0]

    def copies(self, key):
        return self.ctx.extra_outputs.get(key)

    def rows(self, role):
        return self.ctx.extra_outputs.get(role)

    def branch_denoised(self, branch):
        return self.uncond_denoised if branch == UNCOND else self.cond_denoised

    def branch_labels(self, branch):
        return [LABELS[branch]]

    def run_extra(self, branch, x):
        (out,) = self._run_extra(self.args, [self.args["uncond"] if branch == UNCOND else self.args["cond"]], x)
        return out

    def run_state(self, key):
        return self.ctx.run.setdefault(key, {}) if self.ctx.run is not None else {}

    def warn(self, message):
        self._warn(self.ctx, message)


def post_cfg_function(post_cfg, run_extra, timestep, warn):
    """A host post-CFG function (args -> denoised) running a Built's post_cfg(step) inside routed steps."""
    def function(args):
        ctx = step_context(args["model_options"])
        if ctx is None:
            return args["denoised"]
        return post_cfg(ArgsStep(args, ctx, run_extra, timestep, warn))
    return function
