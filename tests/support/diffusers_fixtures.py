"""Module-scoped fixtures of the tests that set ComfyUI beside diffusers on the same weights
(diffusers_in_comfy): import them into the test module, where pytest finds them by name."""
import pytest

import diffusers_in_comfy as D


@pytest.fixture(scope="module")
def dif(comfy):
    return D.import_diffusers()


@pytest.fixture(scope="module")
def pair(dif):
    """The tiny SD1 UNet in diffusers and the ComfyUI model with its weights."""
    return D.tiny_sd1_pair()


@pytest.fixture(scope="module")
def schedule(dif):
    return D.ddim_schedule()
