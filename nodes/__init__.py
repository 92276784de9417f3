from .attend_excite import AttendAndExcite, AttendAndExciteMaps
from .comfy_api_compat import ComfyExtension, io
from .excite_sampler import AttendAndExciteSampler
from .pag import PerturbedAttentionGuidance
from .panorama import Panorama
from .panorama_region import PanoramaRegion
from .sag import SelfAttentionGuidance
from .sega import SEGAConcept, SEGAGuider, SemanticGuidance

NODES = [SelfAttentionGuidance, PerturbedAttentionGuidance, SEGAConcept, SemanticGuidance, SEGAGuider,
         AttendAndExcite, AttendAndExciteMaps, AttendAndExciteSampler, Panorama, PanoramaRegion]


class AttnGuideExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES
