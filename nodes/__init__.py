from .attend_excite import AttendAndExcite, AttendAndExciteMaps
from .comfy_api_compat import ComfyExtension, io
from .pag import PerturbedAttentionGuidance
from .sag import SelfAttentionGuidance

NODES = [SelfAttentionGuidance, PerturbedAttentionGuidance, AttendAndExcite, AttendAndExciteMaps]


class AttnGuideExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES
