"""What every method's WebUI Script does; mixed into one `modules.scripts.Script` subclass
per method in scripts/attnguide_<method>.py. A plain class on purpose: A1111 registers
every Script subclass it finds in a scripts/*.py file (modules/scripts.py:497-505)."""
import logging

from . import ui, which_host
from .a1111 import backend as a1111_backend
from .a1111 import router as a1111_router
from .errors import NotServed
from .forge.webui import host_params
from .xyz import overrides

_LOG = logging.getLogger("attnguide")


class MethodScript:
    spec = None  # methods.MethodSpec

    def title(self):
        return self.spec.title

    def show(self, is_img2img):
        from modules import scripts
        return scripts.AlwaysVisible if self.spec.img2img or not is_img2img else False

    def ui(self, is_img2img):
        return ui.build(self, self.spec, is_img2img)

    def read(self, p, args):
        """(enabled, params keyed like the node's execute() kwargs), X/Y/Z overrides applied."""
        return self.spec.read(args, overrides(p, self.spec.key))

    def process(self, p, *args):
        try:
            enabled, params = self.read(p, args)
        except ValueError as e:  # a value no control can hold (an API client sends anything)
            if args and args[0] or overrides(p, self.spec.key):
                refuse(p, self.spec, e)
            return
        if enabled:
            p.extra_generation_params.update(self.spec.infotext(params))

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Called before every sampling pass (twice with hires fix, modules/processing.py:1338/1446)."""
        try:
            enabled, params = self.read(p, args)
        except ValueError:  # refused in process()
            return
        if not enabled or (getattr(p, "is_hr_pass", False) and self.spec.hires == "skip"):
            return
        if self.spec.key == "attend_excite":
            params["prompt"] = p.prompt
        try:
            if which_host.host() == "a1111":
                _apply_a1111(p, self.spec.key, params, kwargs["x"])
            else:
                _apply_forge(p, self.spec.key, params)
        except Exception as e:  # A1111 would only log it (modules/scripts.py:836-842) and infotext would still list the settings
            refuse(p, self.spec, e)

    def postprocess_batch(self, p, *args, **kwargs):
        _finish(p)

    def postprocess(self, p, processed, *args):
        _finish(p)


def refuse(p, spec, error):
    """The method did not run: its settings leave the infotext and an 'AttnGuide <method> error' entry takes
    their place, so the WebUI's info, the PNG and an API client's `info` say why. Not a NotServed or a
    ValueError (bad input) is a bug: logged with its traceback."""
    if isinstance(error, (NotServed, ValueError)):
        _LOG.warning("attnguide: %s", error)
    else:
        _LOG.exception("attnguide: %s failed", spec.title)
    for key in [k for k in p.extra_generation_params if k.startswith(spec.infotext_prefix)]:
        p.extra_generation_params.pop(key)
    p.extra_generation_params[spec.error_key] = str(error) or type(error).__name__


def _apply_a1111(p, method, params, x):
    a1111_backend.install(a1111_router.session_for(p, x), method, params)


def _apply_forge(p, method, params):
    backend = which_host.load_forge_backend()
    if backend is None:
        raise NotServed(f"{method}: the Forge/reForge backend of AttnGuide is not installed in this copy of the pack.")
    params.update(host_params(p, method))  # the run's sigmas, the prompt encoder / tokenizer (forge.params.HOST_PARAMS)
    objects = p.sd_model.forge_objects
    objects.unet = backend.apply(method, objects.unet, params)


def _finish(p):
    a1111_router.close_session(p)
