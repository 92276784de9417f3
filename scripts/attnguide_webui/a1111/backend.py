"""Plain-A1111 backend of the WebUI scripts: install(session, method, params) puts the method on the
pass's Session (router.session_for), with the ComfyUI node's execute() inputs as params. Each method
is an attention.router Method whose guidance is fn(StepData) -> denoised: for SAG, PAG and SEGA what
their methods/ build gives every host; the others' host machinery is in this package."""
from ..errors import NotServed
from . import attend_excite, pag, panorama, pix2pix_zero, sag, sega

INSTALL = {"sag": sag.install, "pag": pag.install, "sega": sega.install, "panorama": panorama.install,
           "attend_excite": attend_excite.install, "pix2pix_zero": pix2pix_zero.install}


def install(session, method, params):
    """Install `method` with node-keyed params on the session; NotServed if this adapter lacks it."""
    if method not in INSTALL:
        raise NotServed(f"{method}: not available on plain A1111 in this version of AttnGuide "
                        "(it runs on Forge/reForge and in ComfyUI).")
    INSTALL[method](session, **params)
