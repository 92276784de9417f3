"""The demo: a small text-to-image diffusion model of our own (trained on synthetic shape
scenes) and a no-UI run of the pack's methods on it, each paper's effect measured.
`python -m demo --out DIR` from the repo root; see README, "Demo model"."""
