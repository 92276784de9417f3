"""The text of a WebUI conditioning (A1111 and Forge): the tensor or SDXL's "crossattn", and the
one-window check of Pix2Pix-Zero's direction sentences."""
import pytest
import torch

from attnguide.scripts.attnguide_webui.webui_text import cross_attention_text, one_window_sentences


def test_text_of_a_tensor_or_an_sdxl_dict():
    text = torch.zeros(2, 77, 8)
    assert cross_attention_text(text) is text
    assert cross_attention_text({"crossattn": text, "vector": torch.zeros(2, 4)}) is text


def test_direction_sentences_are_one_window_float_on_cpu():
    out = one_window_sentences({"crossattn": torch.ones(3, 77, 8, dtype=torch.float16)}, "Pix2Pix-Zero", "source")
    assert out.dtype == torch.float32 and out.shape == (3, 77, 8) and out.device.type == "cpu"
    with pytest.raises(ValueError, match=r"^Pix2Pix-Zero \(AttnGuide\): target: a sentence is longer than one "
                                         r"75-token window; shorten it"):
        one_window_sentences(torch.zeros(1, 154, 8), "Pix2Pix-Zero (AttnGuide)", "target")
