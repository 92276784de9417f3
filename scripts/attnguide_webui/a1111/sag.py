"""Self-Attention Guidance on plain A1111 (methods/sag.py's build)."""
from ....methods.sag import SPEC, build
from .params import install_built


def install(session, **params):
    install_built(session, SPEC, build, params)
