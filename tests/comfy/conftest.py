import pytest

import comfy_host as H


@pytest.fixture(scope="session")
def comfy():
    return H.require_comfy()


@pytest.fixture(scope="session", params=["sd1", "sdxl"])
def model(request, comfy):
    return {"sd1": H.tiny_sd1, "sdxl": H.tiny_sdxl}[request.param]()


@pytest.fixture(scope="session")
def sd1(comfy):
    return H.tiny_sd1()
