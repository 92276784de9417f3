"""SEGA through the Forge backend equals the SEGA node (ComfyUI standing in for ldm_patched)."""
import pytest
import torch

import comfy_host as H
from node_runs import BatchLog, pag_node, rel, sag_node
from test_forge_sag_pag import forge, run

STEPS = 5
# (seed, direction, scale, warmup, cooldown, timing, threshold, weight)
SPECS = [(11, "add", 5.0, 1, -1, "steps", 0.9, 1.0),
         (12, "remove", 4.0, 40, 80, "percent", 0.8, 0.5)]


def nodes():
    from attnguide.nodes.sega import SEGAConcept, SemanticGuidance
    return SEGAConcept, SemanticGuidance


def a1111_conditioning(model, conditioning):
    """What sd_model.get_learned_conditioning gives: the text, or SDXL's {crossattn, vector}."""
    tensor, extras = conditioning[0]
    if not getattr(model.model, "adm_channels", 0):
        return tensor
    return {"crossattn": tensor, "vector": model.model.encode_adm(**extras)}


def build(model, batch=1, specs=SPECS):
    """The node's concept stack and the backend's concept dicts, from the same encoded text."""
    stack, dicts = None, []
    for seed, direction, scale, warmup, cooldown, timing, threshold, weight in specs:
        cond, _ = H.conds(model, batch, seed=seed)
        stack = nodes()[0].execute(prompt="", direction=direction, scale=scale, warmup=warmup, cooldown=cooldown, timing=timing, threshold=threshold, weight=weight,
                                   conditioning=cond, concepts=stack).args[0]
        dicts.append({"conditioning": a1111_conditioning(model, cond), "direction": direction, "scale": scale,
                      "warmup": warmup, "cooldown": cooldown, "timing": timing, "threshold": threshold,
                      "weight": weight})
    return stack, dicts


def sega_node(model, stack, momentum_scale=0.3, momentum_beta=0.4):
    return nodes()[1].execute(model, stack, momentum_scale=momentum_scale, momentum_beta=momentum_beta).args[0]


def forge_sega(patcher, dicts, momentum_scale=0.3, momentum_beta=0.4, **extra):
    return forge("sega", patcher, steps=STEPS, concepts=dicts, momentum_scale=momentum_scale,
                 momentum_beta=momentum_beta, **extra)


@pytest.fixture
def old(model):
    import forge_double as F
    return F.old_patcher(model)


def test_sega_equals_node_concept_rows_in_the_main_call(model, old):
    stack, dicts = build(model)
    m = forge_sega(old, dicts)
    log = BatchLog(model)
    try:
        ours = run(m, steps=STEPS, forge_path=True)
    finally:
        log.close()
    ref = run(sega_node(model, stack), steps=STEPS)
    assert log.sizes == [4] * STEPS
    assert rel(ours, ref) <= 1e-5
    assert rel(run(model, steps=STEPS), ref) >= 1e-3, "SEGA did not move the result"


@pytest.mark.parametrize("cfg,batch", [(1.0, 1), (5.0, 2)])
def test_cfg1_and_batch2_equal_node(sd1, cfg, batch):
    import forge_double as F
    stack, dicts = build(sd1, batch)
    ours = run(forge_sega(F.old_patcher(sd1), dicts), batch=batch, cfg=cfg, steps=STEPS, forge_path=True)
    ref = run(sega_node(sd1, stack), batch=batch, cfg=cfg, steps=STEPS)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sd1, batch=batch, cfg=cfg, steps=STEPS), ref) >= 1e-3


def test_stacked_with_sag_and_pag_equals_nodes(model, old):
    stack, dicts = build(model)
    m = forge("sag", forge_sega(forge("pag", old, steps=STEPS), dicts), steps=STEPS)
    ours = run(m, steps=STEPS, forge_path=True)
    ref = run(sag_node(sega_node(pag_node(model), stack)), steps=STEPS)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sega_node(model, stack), steps=STEPS), ref) >= 1e-3


def test_momentum_starts_afresh_every_run(sd1):
    import forge_double as F
    _, dicts = build(sd1)
    m = forge_sega(F.old_patcher(sd1), dicts)
    first = run(m, steps=STEPS, forge_path=True)
    assert rel(run(m, steps=STEPS, forge_path=True), first) == 0.0


def test_prompts_are_encoded_with_the_hosts_encoder(sd1):
    import forge_double as F
    pos, _ = H.conds(sd1, 1, seed=11)
    asked = []

    def encode(texts):
        asked.append(list(texts))
        return pos[0][0]

    stack = nodes()[0].execute(prompt="", direction="add", scale=5.0, warmup=1, cooldown=-1, timing="steps", threshold=0.9, weight=1.0, conditioning=pos).args[0]
    m = forge_sega(F.old_patcher(sd1), [{"prompt": "sunglasses", "warmup": 1}], encode=encode)
    assert asked == [["sunglasses"]]
    assert rel(run(m, steps=STEPS, forge_path=True), run(sega_node(sd1, stack), steps=STEPS)) <= 1e-5


def test_bad_concepts_are_named(sd1):
    import forge_double as F
    old = F.old_patcher(sd1)
    encode = lambda texts: torch.zeros(1, 77, 32)
    cases = [({"concepts": []}, "SEGA: no concepts"),
             ({"concepts": [{"prompt": "  "}], "encode": encode}, "concept 1: 'prompt' is empty"),
             ({"concepts": [{"prompt": "hat"}]}, "concept 'hat': no text encoder"),
             ({"concepts": [{"prompt": "hat", "direction": "up"}], "encode": encode}, "direction must be 'add' or 'remove'"),
             ({"concepts": [{"prompt": "hat", "threshold": 1.0}], "encode": encode}, "threshold"),
             ({"concepts": [{"prompt": "hat", "scael": 1.0}], "encode": encode}, "unknown parameter.*'scael'")]
    from attnguide.scripts.attnguide_webui.forge import backend as forge_backend
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            forge_backend.apply("sega", old, params)


def test_sega_defaults_are_the_nodes_defaults(comfy):
    from attnguide.scripts.attnguide_webui.forge.params import CONCEPT_DEFAULTS, DEFAULTS
    concept, sega = nodes()
    inputs = {i.id: i.default for i in concept.define_schema().inputs if not getattr(i, "optional", False)}
    assert {k: v for k, v in CONCEPT_DEFAULTS.items() if k != "conditioning"} == inputs
    inputs = {i.id: getattr(i, "default", None) for i in sega.define_schema().inputs if i.id != "model"}
    assert DEFAULTS["sega"] == inputs


@pytest.mark.parametrize("stop_at", [1, 3])
def test_interrupted_run_leaves_no_momentum_behind(sd1, stop_at):
    """Interrupted at the first evaluation (the next run starts at the same sigma) or later."""
    import forge_double as F
    _, dicts = build(sd1)
    m = forge_sega(F.old_patcher(sd1), dicts)
    clean = run(m, steps=STEPS, forge_path=True)
    calls = []

    def interrupt(args):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt("stop")
        return args["denoised"]

    broken = m.clone()  # shares the run state with m, as clones of one apply do
    broken.set_model_sampler_post_cfg_function(interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(broken, steps=STEPS, forge_path=True)
    assert rel(run(m, steps=STEPS, forge_path=True), clean) == 0.0
