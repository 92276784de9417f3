"""Test-only A1111 extension (tests/support/a1111_host.py installs it beside the pack): seeds
torch's global RNG with the generation's seed before the init image is encoded. A1111 draws
img2img's VAE posterior sample from that unseeded RNG (sd_samplers_common.images_tensor_to_samples
-> get_first_stage_encoding), so without this two identical img2img requests differ; txt2img
noise comes from A1111's own seeded generators and is not affected."""
import torch

from modules import scripts


class SeedGlobalRNG(scripts.Script):
    def title(self):
        return "Seed global RNG (AttnGuide tests)"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):  # before p.init encodes the init image (modules/processing.py:915-921)
        torch.manual_seed(int(p.all_seeds[0]))
