from .attend_excite import AttendAndExcite, AttendAndExciteMaps
from .comfy_api_compat import ComfyExtension, io
from .excite_sampler import AttendAndExciteSampler
from .pag import PerturbedAttentionGuidance
from .panorama import Panorama
from .panorama_region import PanoramaRegion
from .pix2pix_zero import Pix2PixZeroDirection, Pix2PixZeroLoadDirection, Pix2PixZeroSaveDirection
from .pix2pix_zero_edit import Pix2PixZeroEdit
from .pix2pix_zero_invert import Pix2PixZeroInvert
from .pix2pix_zero_maps import Pix2PixZeroMaps
from .sag import SelfAttentionGuidance
from .sega import SEGAConcept, SEGAGuider, SemanticGuidance

NODES = [SelfAttentionGuidance, PerturbedAttentionGuidance, SEGAConcept, SemanticGuidance, SEGAGuider,
         AttendAndExcite, AttendAndExciteMaps, AttendAndExciteSampler, Panorama, PanoramaRegion,
         Pix2PixZeroDirection, Pix2PixZeroSaveDirection, Pix2PixZeroLoadDirection, Pix2PixZeroInvert, Pix2PixZeroEdit,
         Pix2PixZeroMaps]


class AttnGuideExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .. import HOST_TOO_OLD  # logged when the pack was imported
        return [] if HOST_TOO_OLD else NODES
