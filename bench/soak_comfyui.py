"""Soak: many generations in ONE real ComfyUI process with the attnguide methods stacked.

This process imports the ComfyUI at COMFYUI_PATH (headless, CPU, as tests/support/comfy_host.py does),
loads the pack as ComfyUI loads a custom node, and runs the same prompt --runs times through
ComfyUI's own execution.PromptExecutor with the classic cache, which is what its server's prompt
worker does with each queued prompt; after each run it collects garbage, as that worker does.
The prompt has two branches on one tiny random SD1-shaped UNet (tests/support/comfy_host.py's, saved to a
file and loaded by UNETLoader):

  UNETLoader -> AttnGuideSAG -> AttnGuidePAG -> AttnGuideSEGA (two concepts) -> AttnGuidePanorama
             -> KSampler (256x128, three windows)
  UNETLoader -> AttnGuideAttendAndExcite -> AttnGuideSAG -> AttnGuidePAG -> KSampler (96x96)

After each run it prints this process's RSS and a hash of both sampled latents (soak_report.py),
then the RSS growth after the first run (target < 50 MiB) and whether the same seed gave the same
latents every time. The seed alternates between two values, so the samplers really run every time
(the classic cache keeps only the last prompt's outputs; the script checks that neither KSampler
came from the cache); the loader and the method nodes stay cached, as in a user's session, so
their patched models are reused run after run.

    COMFYUI_PATH=/path/to/ComfyUI python bench/soak_comfyui.py [--runs 50]

Run it with the Python of that ComfyUI's environment (it needs pytest: the tiny model and the test
nodes come from tests/). Not a test: CI never runs it. Exit status 1 when a verdict fails.
"""
import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import soak_report

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def prompt(unet, seed, steps):
    sampler = {"seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    concept = {"prompt": "", "scale": 5.0, "warmup": 0, "cooldown": -1, "timing": "steps", "threshold": 0.9,
               "weight": 1.0}
    sag = {"scale": 0.75, "blur_sigma": 1.0, "threshold": 1.0, "layer": "m0.0", "start_percent": 0.0, "end_percent": 1.0}
    pag = {"scale": 3.0, "adaptive_scale": 0.0, "layers": "m0", "rescale": 0.0, "start_percent": 0.0, "end_percent": 1.0}
    excite = {"prompt": "", "words": "", "max_excite_steps": "2", "thresholds": "0: 0.05", "scale_factor": 20.0,
              "scale_range_start": 1.0, "scale_range_end": 0.5, "max_refinement_iterations": 5, "smoothing_sigma": 0.5,
              "attention_downscale": 1, "token_indices": "2, 5"}
    cond = lambda s, empty=False: {"class_type": "AttnGuideTestCond", "inputs": {"seed": s, "empty": empty}}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": cond(1),
        "3": cond(1, empty=True),
        "4": cond(2),
        "5": cond(3),
        "6": {"class_type": "AttnGuideSEGAConcept", "inputs": {**concept, "direction": "add", "conditioning": ["4", 0]}},
        "7": {"class_type": "AttnGuideSEGAConcept", "inputs": {**concept, "direction": "remove", "conditioning": ["5", 0],
                                                               "concepts": ["6", 0]}},
        "8": {"class_type": "AttnGuideSAG", "inputs": {"model": ["1", 0], **sag}},
        "9": {"class_type": "AttnGuidePAG", "inputs": {"model": ["8", 0], **pag}},
        "10": {"class_type": "AttnGuideSEGA", "inputs": {"model": ["9", 0], "concepts": ["7", 0], "momentum_scale": 0.1,
                                                         "momentum_beta": 0.4}},
        "11": {"class_type": "AttnGuidePanorama", "inputs": {"model": ["10", 0], "window_width": 128, "window_height": 128,
                                                             "stride": 64, "wrap": "none", "weights": "uniform",
                                                             "window_batch": 2}},
        "12": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 128, "batch_size": 1}},
        "13": {"class_type": "KSampler", "inputs": {"model": ["11", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                    "latent_image": ["12", 0], **sampler}},
        "14": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["13", 0], "key": "panorama"}},
        "15": {"class_type": "AttnGuideAttendAndExcite", "inputs": {"model": ["1", 0], **excite}},
        "16": {"class_type": "AttnGuideSAG", "inputs": {"model": ["15", 0], **sag}},
        "17": {"class_type": "AttnGuidePAG", "inputs": {"model": ["16", 0], **pag}},
        "18": {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 96, "batch_size": 1}},
        "19": {"class_type": "KSampler", "inputs": {"model": ["17", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                    "latent_image": ["18", 0], **sampler}},
        "20": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["19", 0], "key": "excite"}},
    }


SAMPLERS = ("13", "19")


def _version(comfy):
    """'ComfyUI 0.33.0 @ 783545f6' (the commit from comfyui-checkout.sh's .snapshot, when there)."""
    comfy = Path(comfy)
    version = "?"
    for line in (comfy / "comfyui_version.py").read_text().splitlines():
        if line.startswith("__version__"):
            version = line.split("=")[1].strip().strip("\"'")
    snapshot = comfy / ".snapshot"
    return f"ComfyUI {version}" + (f" @ {snapshot.read_text().split()[0][:8]}" if snapshot.is_file() else "")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs=2, default=[1, 2], help="the two seeds that alternate")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path or not (Path(comfy_path) / "main.py").is_file():
        sys.exit("COMFYUI_PATH must name a ComfyUI checkout")
    sys.path[:0] = [str(TESTS / "support"), str(TESTS / "comfy")]
    import torch
    import comfy_host as H
    problem = H.host_import_problem()
    if problem:
        sys.exit(problem)
    H.require_comfy()
    torch.set_num_threads(a.threads)
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    import execution
    import nodes
    from test_workflow_executes import CAPTURED, _Cond, _Keep

    assert asyncio.run(nodes.load_custom_node(str(ROOT))), "the pack did not load"
    nodes.NODE_CLASS_MAPPINGS.update({"AttnGuideTestCond": _Cond, "AttnGuideTestKeep": _Keep})
    with tempfile.TemporaryDirectory(prefix="attnguide_soak_") as folder, H.tiny_unet_file(folder) as unet:
        executor = H.prompt_executor()
        report = soak_report.SoakLog(f"{_version(comfy_path)}, in-process PromptExecutor, SAG+PAG+SEGA(2 concepts)+panorama "
                                     f"and Attend-and-Excite+SAG+PAG, tiny SD1 UNet, {a.steps} steps euler", a.runs, what="latents")
        for i in range(a.runs):
            seed = a.seeds[i % 2]
            t = time.time()
            work = prompt(unet.name, seed, a.steps)
            pid = f"soak{i}"
            valid, err, outputs, node_errors = asyncio.run(execution.validate_prompt(pid, work, None))
            if not valid:
                sys.exit(f"ComfyUI refused the prompt: {err} {node_errors}")
            executor.execute(work, pid, extra_data={}, execute_outputs=outputs)
            if not executor.success:
                sys.exit(f"run {i + 1} failed: {executor.status_messages}")
            cached = {n for event, data in executor.status_messages if event == "execution_cached" for n in data["nodes"]}
            if cached & set(SAMPLERS):
                sys.exit(f"run {i + 1}: a KSampler came from the cache, nothing was generated")
            image = soak_report.tensor_hash(CAPTURED["panorama"], CAPTURED["excite"])
            gc.collect()
            report.add(seed, soak_report.rss_bytes(), image, time.time() - t)
        ok = report.summary()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
