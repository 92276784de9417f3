"""A small UNet with Stable Diffusion's layout and ComfyUI/ldm module names, in pixel space.

input_blocks, middle_block, output_blocks are sequentials of ResBlock / SpatialTransformer /
Down- and Upsample (ldm's TimestepEmbedSequential), so attention.layers.unet_layers reads
its self-attention layers as it reads SD1's: d5.0 (8x8), m0.0 (8x8, middle), u0.0, u1.0 (8x8).
There is no attention at 32x32 or 16x16, which keeps it cheap on a CPU.

Hook points, both read from `transformer_options` (a dict passed down every forward, as in
ComfyUI):
  * self-attention (attn1) goes through the pack's router when options[ROUTER_KEY] is a
    Router that hooks this layer: router.attend(q, k, v, heads, layer, options, base), where
    options also carry the router's STEP_KEY / ROLES_KEY and "cond_or_uncond" chunk labels.
  * cross-attention (attn2) computes its probabilities explicitly (16 text tokens) and, when
    options[CROSS_ATTENTION_KEY] is set, calls it as fn(probs, layer, options) with probs
    shaped (batch, heads, queries, tokens); a tensor it returns replaces probs (a method may
    edit them), None keeps them. Nothing is detached, so a method can take gradients of a
    loss on probs with respect to the input (Attend-and-Excite).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ._pack import core

_layers = core("attention.layers")
_math = core("attention.math")
ROUTER_KEY = core("attention.router").ROUTER_KEY
CROSS_ATTENTION_KEY = "attnguide_demo_cross_attention"


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def norm(channels):
    return nn.GroupNorm(8, channels)


class ResBlock(nn.Module):
    def __init__(self, channels, emb_channels, out_channels):
        super().__init__()
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(norm(out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    """attn1 (context None: self-attention, routed) or attn2 (cross-attention to the text)."""

    def __init__(self, dim, heads, context_dim=None):
        super().__init__()
        self.heads = heads
        self.is_cross = context_dim is not None
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))
        self.layer = None  # its Layer address, set by the UNet (self-attention only)

    def forward(self, x, context, options):
        q = self.to_q(x)
        source = context if self.is_cross else x
        k, v = self.to_k(source), self.to_v(source)
        out = self._cross(q, k, v, options) if self.is_cross else self._self(q, k, v, options)
        return self.to_out(out)

    def _self(self, q, k, v, options):
        heads = self.heads

        def base(q, k, v, *labels):
            qh, kh, vh = (_math.split_heads(t, heads) for t in (q, k, v))
            return _math.merge_heads(F.scaled_dot_product_attention(qh, kh, vh))

        router = options.get(ROUTER_KEY)
        if router is None or self.layer not in router.layers:
            return base(q, k, v)
        return router.attend(q, k, v, heads, self.layer, options, base)

    def _cross(self, q, k, v, options):
        qh, kh, vh = (_math.split_heads(t, self.heads) for t in (q, k, v))
        probs = torch.softmax(qh @ kh.transpose(-1, -2) * qh.shape[-1] ** -0.5, dim=-1)
        observe = options.get(CROSS_ATTENTION_KEY)
        if observe is not None:
            edited = observe(probs, self.layer, options)
            probs = probs if edited is None else edited
        return _math.merge_heads(probs @ vh)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, context_dim):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), CrossAttention(dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), CrossAttention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x, context, options):
        x = x + self.attn1(self.norm1(x), None, options)
        x = x + self.attn2(self.norm2(x), context, options)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels, heads, context_dim, depth=1):
        super().__init__()
        self.norm = norm(channels)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlock(channels, heads, context_dim) for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x, context, options):
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for block in self.transformer_blocks:
            t = block(t, context, options)
        return x + self.proj_out(t).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb, context, options):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, options)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """eps = unet(x, timesteps, context, transformer_options). Config defaults: ~0.98M parameters (64 channels only at 8x8: the 32x32 and 16x16 convolutions are the CPU cost)."""

    def __init__(self, in_channels=3, model_channels=32, channel_mult=(1, 1, 2), attention_levels=(2,),
                 num_res_blocks=1, heads=4, context_dim=64):
        super().__init__()
        self.config = dict(in_channels=in_channels, model_channels=model_channels, channel_mult=list(channel_mult),
                           attention_levels=list(attention_levels), num_res_blocks=num_res_blocks, heads=heads,
                           context_dim=context_dim)
        emb = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.model_channels = model_channels

        def stage(ch, out, level):
            mods = [ResBlock(ch, emb, out)]
            if level in attention_levels:
                mods.append(SpatialTransformer(out, heads, context_dim))
            return mods

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        skips, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.input_blocks.append(TimestepEmbedSequential(*stage(ch, model_channels * mult, level)))
                ch = model_channels * mult
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skips.append(ch)
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb, ch), SpatialTransformer(ch, heads, context_dim),
                                                    ResBlock(ch, emb, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                mods = stage(ch + skips.pop(), model_channels * mult, level)
                ch = model_channels * mult
                if level > 0 and i == num_res_blocks:
                    mods.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*mods))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        self._address_layers()

    def _address_layers(self):
        """Give every attention module its Layer address (the one unet_layers reads)."""
        parts = (("input", list(self.input_blocks)), ("middle", [self.middle_block]), ("output", list(self.output_blocks)))
        for kind, blocks in parts:
            for index, block in enumerate(blocks):
                for module in block:
                    for depth, tb in enumerate(getattr(module, "transformer_blocks", ())):
                        tb.attn1.layer = tb.attn2.layer = _layers.Layer(kind, index, depth)

    def forward(self, x, timesteps, context, transformer_options=None):
        options = transformer_options if transformer_options is not None else {}
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context, options)
            hs.append(h)
        h = self.middle_block(h, emb, context, options)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context, options)
        return self.out(h)
