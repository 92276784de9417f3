"""forge/webui.py: what the script reads from a WebUI generation for the Forge backend (host-free;
the WebUI pieces are doubles written from Forge dfdcbab6 modules/sd_samplers_kdiffusion.py:136-143,
sd_samplers_common.py:24-33, processing.py:1532, backend/text_processing/classic_engine.py:150-175)."""
import types

import torch


def webui():
    from attnguide.scripts.attnguide_webui.forge import webui as forge_webui
    return forge_webui


class Sampler:
    def get_sigmas(self, p, steps):
        return torch.linspace(10, 1, steps).tolist() + [0.0]


def setup_img2img_steps(p, steps=None):  # modules/sd_samplers_common.py:24-33 with img2img_fix_steps off
    if steps is not None:
        requested = steps
        return int(requested / min(p.denoising_strength, 0.999)), requested - 1
    return p.steps, int(min(p.denoising_strength, 0.999) * p.steps)


def test_schedules_of_txt2img_img2img_and_hires():
    base = dict(sampler=Sampler(), steps=10, denoising_strength=0.5, hr_second_pass_steps=0, is_hr_pass=False)
    txt2img = types.SimpleNamespace(**base)
    assert webui().schedule(txt2img) == Sampler().get_sigmas(None, 10)
    img2img = types.SimpleNamespace(**base, init_images=["image"])
    assert webui().schedule(img2img, setup_img2img_steps) == Sampler().get_sigmas(None, 10)[10 - 5 - 1:]
    assert len(webui().schedule(img2img, setup_img2img_steps)) == 5 + 1 + 1  # t_enc + 1 steps run, plus sigma 0
    hires = types.SimpleNamespace(**{**base, "is_hr_pass": True, "hr_second_pass_steps": 4})
    assert webui().schedule(hires, setup_img2img_steps) == Sampler().get_sigmas(None, 8)[8 - 3 - 1:]
    unknown = types.SimpleNamespace(**{**base, "sampler": object()})
    assert webui().schedule(unknown) is None


def ddim(model, x, timesteps):  # the timestep samplers keep their function as `funcname`
    return x


def plms(model, x, timesteps):
    return x


class TimestepSampler:
    """Forge's CompVisSampler (modules/sd_samplers_timesteps.py:49-70): get_timesteps, and the alphas
    its CFGDenoiserTimesteps reads (1 / (predictor.sigmas ** 2 + 1))."""

    def __init__(self, func):
        self.funcname = self.func = func
        sigmas = torch.linspace(0.03, 14.6, 1000)
        inner = types.SimpleNamespace(inner_model=types.SimpleNamespace(alphas_cumprod=1.0 / (sigmas ** 2 + 1)))
        self.model_wrap_cfg = types.SimpleNamespace(inner_model=inner)
        self.sigmas = sigmas

    def get_timesteps(self, p, steps):
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def test_timestep_sampler_schedule_is_the_sigmas_of_its_timesteps():
    """DDIM evaluates timesteps[-1] .. timesteps[1] and ends at timesteps[0]; Forge's CFGDenoiser hands the
    model the sigma sqrt((1 - abar) / abar) of each; img2img runs timesteps[:t_enc]."""
    sampler = TimestepSampler(ddim)
    base = dict(sampler=sampler, steps=4, denoising_strength=0.5, hr_second_pass_steps=0, is_hr_pass=False)
    sigmas = webui().schedule(types.SimpleNamespace(**base))
    assert torch.allclose(sigmas, sampler.sigmas[[751, 501, 251, 1]], rtol=1e-5)
    img2img = types.SimpleNamespace(**{**base, "steps": 10}, init_images=["image"])
    sigmas = webui().schedule(img2img, setup_img2img_steps)  # t_enc 5 of 10: timesteps 401, 301, 201, 101 -> 1
    assert torch.allclose(sigmas, sampler.sigmas[[401, 301, 201, 101, 1]], rtol=1e-5)


def test_attend_excite_serves_ddim_and_refuses_the_other_timestep_samplers():
    p = types.SimpleNamespace(sampler=TimestepSampler(ddim), steps=3, is_hr_pass=False,
                              sd_model=types.SimpleNamespace(text_processing_engine=object()))
    assert set(webui().host_params(p, "attend_excite")) == {"sigmas", "tokenize"}
    p.sampler = TimestepSampler(plms)
    import pytest
    with pytest.raises(ValueError, match="the sampler plms is not served"):
        webui().host_params(p, "attend_excite")


class WordTokenizer:
    """A word-level stand-in for the CLIP tokenizer: ids 0/1/2 are start/end/pad, 'giraffe' is two pieces."""
    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    def __init__(self):
        self.pieces = ["<|startoftext|>", "<|endoftext|>", "<pad>"]

    def ids(self, text):
        out = []
        for word in text.split():
            for piece in (["gir", "affe</w>"] if word == "giraffe" else [word + "</w>"]):
                if piece not in self.pieces:
                    self.pieces.append(piece)
                out.append(self.pieces.index(piece))
        return out

    def convert_ids_to_tokens(self, token):
        return self.pieces[token]


def test_tokenize_keeps_the_chunk_layout():
    hf = WordTokenizer()

    class Engine:  # Forge's ClassicTextProcessingEngine.tokenize_line layout, 3-token chunks
        id_start, id_end, id_pad = hf.bos_token_id, hf.eos_token_id, hf.pad_token_id
        tokenizer = hf

        def tokenize_line(self, line):
            ids = hf.ids(line)
            chunks = [ids[i:i + 3] for i in range(0, len(ids), 3)]
            return [types.SimpleNamespace(tokens=[self.id_start] + c + [self.id_end] * (3 - len(c)) + [self.id_end])
                    for c in chunks], len(ids)

    tokenize = webui().tokenizer(types.SimpleNamespace(text_processing_engine=Engine()))
    tokens = tokenize("a photo of a cat and a giraffe")
    assert [(pos, piece) for pos, _, piece in tokens] == [
        (1, "a</w>"), (2, "photo</w>"), (3, "of</w>"), (6, "a</w>"), (7, "cat</w>"), (8, "and</w>"),
        (11, "a</w>"), (12, "gir"), (13, "affe</w>")]
    from attnguide.guidance.excite_inputs import find_words
    assert find_words(tokenize, "a photo of a cat and a giraffe", "cat, giraffe") == (7, 13)


def test_host_params_per_method():
    p = types.SimpleNamespace(sampler=Sampler(), steps=3, is_hr_pass=False,
                              sd_model=types.SimpleNamespace(text_processing_engine=object()))
    assert set(webui().host_params(p, "pag")) == {"sigmas"}
    assert webui().host_params(p, "pag")["sigmas"]() == Sampler().get_sigmas(p, 3)
    assert set(webui().host_params(p, "sega")) == {"sigmas", "encode"}
    assert set(webui().host_params(p, "attend_excite")) == {"sigmas", "tokenize"}
