"""The demo model's parts: scenes, tokenizer, UNet layout, attention hook points, training resume."""
import pytest
import torch

from attnguide.attention.layers import Layer, parse_layers, unet_layers
from attnguide.attention.math import identity_attention
from attnguide.attention.router import COND, STEP_KEY, AttentionHook, Method, Router
from attnguide.demo import judge, scenes, text, train
from attnguide.demo.host import Host, ddim_sigmas
from attnguide.demo.model import DemoModel, load
from attnguide.demo.unet import CROSS_ATTENTION_KEY


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DemoModel().eval()


def test_scenes_match_their_captions_and_do_not_overlap():
    g = torch.Generator().manual_seed(0)
    images, scene_list, captions = scenes.batch(g, 64)
    assert images.shape == (64, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    for s, c in zip(scene_list, captions):
        assert 1 <= len(s.objects) <= 3 and len(s.content) == len(s.objects)  # one shape per colour
        assert sorted(c.split(" and ")) == sorted(f"a {col} {shape}" for col, shape in s.content.items())
    # the colour counter sees each object's area (anti-aliased edges aside)
    for image, s in zip(images[:16], scene_list[:16]):
        for colour, shape, cx, cy, r in s.objects:
            area = scenes.shape_mask(shape, cx, cy, r).sum().item() / 32 ** 2
            assert abs(judge.colour_fraction(image[None], colour).item() - area) < 0.35 * area


def test_tokenizer_pads_and_rejects_unknown_words():
    ids = text.tokenize(["a red circle", ""])
    assert ids.shape == (2, text.MAX_TOKENS)
    assert ids[0, :5].tolist() == [1, text.VOCAB.index("a"), text.VOCAB.index("red"), text.VOCAB.index("circle"), 2]
    assert ids[1, :2].tolist() == [1, 2] and ids[1, 2:].eq(0).all()
    with pytest.raises(ValueError, match="unknown word.*purple"):
        text.tokenize(["a purple circle"])


def test_unet_has_sd_layout_readable_by_the_pack(model):
    layers = unet_layers(model.unet)
    assert layers == [Layer("input", 5, 0), Layer("middle", 0, 0), Layer("output", 0, 0), Layer("output", 1, 0)]
    assert parse_layers("m0", layers) == (Layer("middle", 0, 0),)
    names = {n for n, _ in model.unet.named_modules()}
    assert "middle_block.1.transformer_blocks.0.attn1" in names
    assert "output_blocks.1.1.transformer_blocks.0.attn2" in names


def test_self_attention_goes_through_the_router(model):
    layer = Layer("middle", 0, 0)
    seen = []

    def hook(q, k, v, heads, ctx, options, next):
        seen.append((q.shape, heads, ctx.step))
        return identity_attention(q, k, v, heads)

    router = Router().with_method(Method("probe", hooks=(AttentionHook(frozenset({layer}), lambda ctx: {COND}, hook),)))
    host = Host(model, ())
    host.router = router
    ctx = router.begin_step(5.0, [5.0, 0.0], 1.0)
    x, context = torch.randn(2, 3, 32, 32), torch.randn(2, 16, 64)
    with torch.no_grad():
        (plain,) = Host(model).call(x, 5.0, [context], [0], ctx, ["cond"])
        (hooked,) = host.call(x, 5.0, [context], [0], ctx, ["cond"])
        (other_role,) = host.call(x, 5.0, [context], [0], ctx, ["uncond"])
    assert seen == [(torch.Size([2, 64, 64]), 4, 0)]  # 8x8 tokens, 64 channels, 4 heads; cond rows only
    assert (hooked - plain).abs().max() > 1e-4
    assert torch.equal(other_role, plain)


def test_cross_attention_probabilities_are_exposed_and_differentiable(model):
    seen = {}

    def observe(probs, layer, options):
        seen[layer] = probs
        if layer == Layer("middle", 0, 0):
            return torch.full_like(probs, 1 / probs.shape[-1])  # an edit: uniform attention over the tokens

    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    context = model.text.encode(["a red circle"])
    plain = model.denoise(x, 3.0, context)
    edited = model.denoise(x, 3.0, context, {CROSS_ATTENTION_KEY: observe})
    assert set(seen) == set(unet_layers(model.unet))
    for probs in seen.values():
        assert probs.shape == (1, 4, 64, text.MAX_TOKENS)
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    assert (edited - plain).abs().max() > 1e-4
    seen[Layer("input", 5, 0)][..., 2].mean().backward()  # e.g. Attend-and-Excite's loss on one token
    assert x.grad is not None and x.grad.abs().max() > 0


def test_sigma_timestep_mapping_is_the_training_schedule(model):
    for t in (0, 1, 250, 999):
        assert abs(model.timestep(model.sigmas[t]).item() - t) < 1e-3
    sigmas = ddim_sigmas(model, 10)
    assert len(sigmas) == 11 and sigmas[-1] == 0 and sigmas[0] == pytest.approx(model.sigmas[999].item())


def test_training_resumes_to_the_same_weights(tmp_path):
    common = ["--batch", "4", "--warmup", "2", "--save-minutes", "1000"]
    train.main(common + ["--steps", "4", "--state", str(tmp_path / "a.pt"), "--out", str(tmp_path / "a.safetensors")])
    train.main(common + ["--steps", "2", "--state", str(tmp_path / "b.pt"), "--out", str(tmp_path / "b.safetensors")])
    train.main(common + ["--steps", "4", "--state", str(tmp_path / "b.pt"), "--out", str(tmp_path / "b.safetensors")])
    a, meta_a = load(tmp_path / "a.safetensors")
    b, meta_b = load(tmp_path / "b.safetensors")
    assert meta_a["step"] == meta_b["step"] == "4"
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_causal_text_encoder_sees_only_earlier_words():
    torch.manual_seed(0)
    prompts = ["a red circle and a blue square", "a red circle and a green triangle"]  # differ from word 5 on
    with torch.no_grad():
        causal = DemoModel(text_config={"causal": True}).text.encode(prompts)
        torch.manual_seed(0)
        both_ways = DemoModel().text.encode(prompts)
    first = slice(0, 5)   # <start> a red circle and
    assert torch.allclose(causal[0, first], causal[1, first], atol=1e-6)
    assert (both_ways[0, first] - both_ways[1, first]).abs().max() > 1e-3
    assert (causal[0, 5:] - causal[1, 5:]).abs().max() > 1e-3


def test_text_encoder_kind_is_saved_with_the_weights(tmp_path):
    causal = DemoModel(text_config={"causal": True})
    causal.save(tmp_path / "causal.safetensors")
    assert load(tmp_path / "causal.safetensors")[0].text.config["causal"] is True
    shipped, meta = load()
    assert "text_config" not in meta and shipped.text.config["causal"] is False   # saved before the option: bidirectional


def test_training_starts_from_given_weights_with_a_causal_encoder(tmp_path):
    start = DemoModel()
    start.save(tmp_path / "start.safetensors", {"step": 7, "train_minutes": 1.5})
    train.main(["--batch", "4", "--warmup", "2", "--save-minutes", "1000", "--steps", "9", "--causal-text",
                "--init", str(tmp_path / "start.safetensors"), "--state", str(tmp_path / "s.pt"),
                "--out", str(tmp_path / "out.safetensors")])
    out, meta = load(tmp_path / "out.safetensors")
    assert meta["step"] == "9" and out.text.config["causal"] is True
