from ..comfyui.panorama import REGION_KEY
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY


class PanoramaRegion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePanoramaRegion",
            search_aliases=["MultiDiffusion", "region prompt", "regional prompt", "tiled", "mask"],
            display_name="Panorama Region (AttnGuide)",
            category=CATEGORY,
            description="MultiDiffusion region prompt: adds `region` to `conditioning`, applied under `mask`. Where "
                        "several prompts cover a position their predictions are averaged by mask weight (the prompts "
                        "without a mask count as weight 1 everywhere). With the Panorama node, the region is "
                        "bootstrapped for the first steps (it sees a flat noised background outside its mask). "
                        "Chain one node per region.",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="The prompts so far (e.g. the background prompt, or "
                                                              "the output of another Panorama Region node)."),
                io.Conditioning.Input("region", tooltip="The region's prompt."),
                io.Mask.Input("mask", tooltip="Where the region applies, at any resolution of the image's aspect "
                                              "(1 = fully). A mask of another aspect is an error at sampling."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Weight of the region's prediction under its mask, against the other prompts."),
                io.Float.Input("bootstrap", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the steps during which the region is generated on its own over a "
                                       "flat noised background (MultiDiffusion's bootstrapping, sharper region "
                                       "borders). 0 = off. Needs the Panorama node on the model."),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, conditioning, region, mask, strength, bootstrap) -> io.NodeOutput:
        if mask.ndim == 2:
            mask = mask[None]
        if mask.ndim != 3 or min(mask.shape[-2:]) < 1:
            raise ValueError(f"mask: expected a (batch, height, width) mask, got shape {tuple(mask.shape)}")
        tag = {"bootstrap": float(bootstrap), "mask_hw": tuple(mask.shape[-2:])}
        added = [[t, {**d, "mask": mask, "set_area_to_bounds": False, "mask_strength": strength, REGION_KEY: tag}]
                 for t, d in region]
        return io.NodeOutput(list(conditioning) + added)
