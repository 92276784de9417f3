"""Model hygiene, stacking with other patches, bad input, unsupported models, loading."""
import asyncio
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import comfy_host as H
from node_runs import pag_node, rel, run, sag_node

ROOT = Path(__file__).resolve().parents[2]


def _options_fingerprint(m):
    return repr(m.model_options), repr(m.wrappers), repr(m.callbacks), repr(m.patches)


def test_input_model_untouched(model):
    before_options = _options_fingerprint(model)
    before_weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    plain = run(model)
    patched = pag_node(sag_node(model))
    run(patched)
    assert patched is not model
    assert _options_fingerprint(model) == before_options
    for k, v in model.model.state_dict().items():
        assert torch.equal(v, before_weights[k]), k
    assert torch.equal(run(model), plain)


def test_clone_of_patched_model_is_independent(sd1):
    one = pag_node(sd1)
    two = sag_node(one)
    key = "attnguide_router"
    assert len(one.model_options["transformer_options"][key].methods) == 1
    assert len(two.model_options["transformer_options"][key].methods) == 2


def test_stacks_with_builtin_sag_patch(sd1, monkeypatch):
    """ComfyUI's own SAG replaces attn1 of m0.0; our PAG on the same layer must still act."""
    from comfy_extras.nodes_sag import SelfAttentionGuidance as BuiltinSAG
    import attnguide.methods.pag as pag_module
    calls = []
    real = pag_module.identity_attention
    monkeypatch.setattr(pag_module, "identity_attention", lambda *a: calls.append(1) or real(*a))
    for m in (H.builtin(BuiltinSAG, pag_node(sd1), 0.5, 2.0), pag_node(H.builtin(BuiltinSAG, sd1, 0.5, 2.0))):
        calls.clear()
        out = run(m, steps=2)
        assert torch.isfinite(out).all()
        assert len(calls) == 2
    builtin_only = run(H.builtin(BuiltinSAG, sd1, 0.5, 2.0), steps=2)
    assert (out - builtin_only).abs().max() > 0


def test_stacks_with_builtin_pag(sd1):
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance as BuiltinPAG
    ours_then = run(H.builtin(BuiltinPAG, sag_node(sd1), 3.0))
    then_ours = run(sag_node(H.builtin(BuiltinPAG, sd1, 3.0)))
    assert rel(ours_then, then_ours) <= 1e-5
    assert rel(ours_then, run(sag_node(sd1))) >= 1e-3


def test_unknown_layer_is_a_clear_error(sd1):
    with pytest.raises(ValueError, match=r"layers: 'm1' names no attention layer.*Valid layers: d1\.0"):
        pag_node(sd1, layers="m1")
    with pytest.raises(ValueError, match="layer: cannot read 'middle'"):
        sag_node(sd1, layer="middle")
    with pytest.raises(ValueError, match="SAG reads one layer"):
        sag_node(sd1, layer="u")


def test_unet_without_middle_attention_is_a_clear_error(comfy):
    m = H.tiny_sd1()
    dm = m.model.diffusion_model
    dm.middle_block = torch.nn.Sequential(dm.middle_block[0])
    with pytest.raises(ValueError, match="'m0' names no attention layer.*Valid layers: d1.0, d3.0, u0.0"):
        pag_node(m)


def test_dit_gets_a_warning_and_the_model_back(caplog, comfy):
    class Flux(torch.nn.Module):
        pass
    dit = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=Flux()))
    caplog.set_level(logging.WARNING)
    assert sag_node(dit) is dit
    assert pag_node(dit) is dit
    text = caplog.text
    assert "SimpleNamespace" in text and "Flux" in text and "not a UNet" in text


def test_pack_registers_its_nodes(comfy):
    import nodes
    ok = asyncio.run(nodes.load_custom_node(str(ROOT)))
    assert ok
    assert {"AttnGuideSAG", "AttnGuidePAG"} <= set(nodes.NODE_CLASS_MAPPINGS)
    assert nodes.NODE_CLASS_MAPPINGS["AttnGuidePAG"].__module__ != "comfy_extras.nodes_pag"


def test_pack_loads_at_comfyui_startup(comfy, tmp_path):
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    (custom / "attnguide").symlink_to(ROOT)
    cfg = tmp_path / "paths.yaml"
    cfg.write_text(f"pack:\n  custom_nodes: {custom}\n")
    proc = subprocess.run([sys.executable, "main.py", "--cpu", "--quick-test-for-ci", "--disable-api-nodes",
                           "--extra-model-paths-config", str(cfg), "--verbose", "DEBUG"],
                          cwd=comfy, capture_output=True, text=True, timeout=300)  # PYTHONPATH (cpu-shim) passes on
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "attnguide" in log, log[-3000:]
    assert "IMPORT FAILED" not in "\n".join(l for l in log.splitlines() if "attnguide" in l), log[-3000:]


def _prompt(**pag_inputs):
    inputs = {"scale": 3.0, "adaptive_scale": 0.0, "layers": "m0", "rescale": 0.0,
              "start_percent": 0.0, "end_percent": 1.0, **pag_inputs}
    return {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "missing.safetensors", "weight_dtype": "default"}},
            "2": {"class_type": "AttnGuidePAG", "inputs": {"model": ["1", 0], **inputs}},
            "3": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["2", 0], "sampling": "eps", "zsnr": False}}}


def test_out_of_range_inputs_are_rejected_by_the_host(comfy):
    import execution
    import nodes
    asyncio.run(nodes.load_custom_node(str(ROOT)))
    valid, errors, _ = asyncio.run(execution.validate_inputs("p", _prompt(scale=500.0, end_percent=2.0), "2", {}))
    messages = " | ".join(f"{e['message']}: {e['details']}" for e in errors)
    assert not valid
    assert "bigger than max of 100.0" in messages and "scale" in messages, messages
    assert "end_percent" in messages, messages
