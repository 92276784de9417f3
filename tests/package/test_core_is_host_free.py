"""The core and the pack's entry module import outside any host and pull in no host code."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("attnguide", {str(ROOT / '__init__.py')!r},
                                              submodule_search_locations=[{str(ROOT)!r}])
pack = importlib.util.module_from_spec(spec); sys.modules["attnguide"] = pack; spec.loader.exec_module(pack)
import attnguide.attention.layers, attnguide.attention.math, attnguide.attention.router, attnguide.attention.shared_prefix
import attnguide.guidance.sag, attnguide.guidance.pag, attnguide.guidance.schedule, attnguide.guidance.rescale
import attnguide.guidance.attend_excite, attnguide.guidance.excite_inputs, attnguide.guidance.latent_update, attnguide.attention.cross_maps, attnguide.attention.unet_levels
import attnguide.attention.model_calls, attnguide.attention.excite_forward, attnguide.attention.attn1_replace, attnguide.guidance.panorama, attnguide.attention.step_window
import attnguide.methods
assert callable(pack.comfy_entrypoint)
hosts = sorted(m for m in sys.modules if m.split(".")[0] in ("comfy", "comfy_api", "modules", "ldm", "sgm", "backend", "ldm_patched"))
print(hosts)
sys.exit(1 if hosts else 0)
"""


def test_core_imports_without_a_host():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pack_imports(path):
    """The pack's own top-level packages a module imports (relative imports resolved against its folder)."""
    import ast
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(ROOT).parts) - 1
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level == depth + 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level <= depth:
                out.add(path.relative_to(ROOT).parts[depth - node.level])
    return out


def test_layers_read_one_way():
    """hosts (nodes/, scripts/) -> methods/ -> attention/ and guidance/; attention/ and guidance/ never import
    each other or methods/."""
    allowed = {"attention": {"attention"}, "guidance": {"guidance"}, "methods": {"methods", "attention", "guidance"}}
    for layer, may_import in allowed.items():
        for path in sorted((ROOT / layer).glob("*.py")):
            assert _pack_imports(path) <= may_import, (path.name, _pack_imports(path) - may_import)
