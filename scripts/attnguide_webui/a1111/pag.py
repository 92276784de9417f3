"""Perturbed-Attention Guidance on plain A1111 (methods/pag.py's build): the perturbed rows run in the
same UNet call as cond/uncond."""
from ....methods.pag import SPEC, build
from .params import install_built


def install(session, **params):
    install_built(session, SPEC, build, params)
