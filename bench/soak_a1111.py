"""Soak: many generations in ONE real A1111 server with the attnguide methods stacked.

Starts A1111 (A1111_PATH, API only, CPU, the tiny checkpoint; tests/support/a1111_host.py and
tests/support/webui_server.py: a fresh copy of this checkout as its extension) and sends --runs
requests through its HTTP API, rotating over four: txt2img with SAG + PAG + SEGA + Attend-and-Excite + panorama (128x64, three windows) and
img2img with SAG + PAG + SEGA + panorama + Pix2Pix-Zero, each with two seeds. After each request
it prints the server process's RSS and a hash of the image's pixels (soak_report.py), then the RSS
growth after the first run (target < 50 MiB) and whether every request of the same kind and seed
gave the same image.

    A1111_PATH=/path/to/webui python bench/soak_a1111.py [--runs 50]

Run it with a Python that has pytest and Pillow (the server helper lives in tests/); the server
itself runs with A1111's venv (A1111_PYTHON, see tests/support/webui_server.py). Not a test: CI
never runs it. Exit status 1 when a verdict fails.
"""
import argparse
import base64
import sys
import time
from pathlib import Path

import soak_report

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "support")]

import conftest  # noqa: E402,F401  (loads this checkout as the package attnguide)
import a1111_host  # noqa: E402
import webui_payloads as P  # noqa: E402

TXT2IMG = ("sag", "pag", "sega", "attend_excite", "panorama")
IMG2IMG = ("sag", "pag", "sega", "panorama", "pix2pix_zero")
SEEDS = (1234, 4321)


def requests(init_image):
    """(label, endpoint, body) of the four requests the soak rotates over."""
    img2img = {"init_images": [init_image], "denoising_strength": 0.6}
    return [(f"txt2img {seed}", "txt2img", P.request(*TXT2IMG, seed=seed, **P.PANORAMA_SIZE)) for seed in SEEDS] + \
           [(f"img2img {seed}", "img2img", P.request(*IMG2IMG, seed=seed, **img2img, **P.PANORAMA_SIZE)) for seed in SEEDS]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    server = a1111_host.server(ui=False)
    server.start()
    try:
        init_image = server.post("/sdapi/v1/txt2img", P.request(seed=99, **P.PANORAMA_SIZE))["images"][0]
        rotation = requests(init_image)
        log = soak_report.SoakLog(f"A1111 {server.commit[:12]} (API only, tiny checkpoint)", args.runs)
        for i in range(args.runs):
            label, endpoint, body = rotation[i % len(rotation)]
            start = time.perf_counter()
            answer = server.post(f"/sdapi/v1/{endpoint}", body)
            seconds = time.perf_counter() - start
            errors = [k for k in P.info(answer)["extra_generation_params"] if k.endswith(" error")]
            if errors:
                raise SystemExit(f"run {i + 1} ({label}): a method was refused: {errors}")
            image = base64.b64decode(answer["images"][0])
            log.add(label, server.rss_bytes(), soak_report.pixel_hash(image), seconds)
        ok = log.summary()
    finally:
        server.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
