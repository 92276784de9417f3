"""Every ComfyUI node of the pack has search aliases (the names users type: PAG, MultiDiffusion, ...),
read from the node files without a host."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # not from conftest: tests/*/conftest.py share that module name
NODE_FILES = sorted(p for p in (ROOT / "nodes").glob("*.py") if p.name != "comfy_api_compat.py")


def _schemas():
    """node_id -> the keywords of the schema call of each define_schema in nodes/."""
    out = {}
    for path in NODE_FILES:
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(fn, ast.FunctionDef) and fn.name == "define_schema":
                calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)
                         and any(k.arg == "node_id" for k in n.keywords)]
                assert len(calls) == 1, f"{path.name}: {len(calls)} schema calls in one define_schema"
                kw = {k.arg: k.value for k in calls[0].keywords}
                assert isinstance(calls[0].func, ast.Name) and calls[0].func.id == "node_schema", \
                    f"{path.name}: build the schema with node_schema (it passes search_aliases where the host has them)"
                out[ast.literal_eval(kw["node_id"])] = kw
    return out


def test_every_node_has_search_aliases():
    schemas = _schemas()
    node_ids = {ast.literal_eval(k.value) for p in NODE_FILES for k in ast.walk(ast.parse(p.read_text()))
                if isinstance(k, ast.keyword) and k.arg == "node_id"}
    assert len(schemas) == len(node_ids) == 16, sorted(node_ids)
    for node_id, kw in schemas.items():
        assert "search_aliases" in kw, node_id
        aliases = ast.literal_eval(kw["search_aliases"])
        assert aliases and all(isinstance(a, str) and a.strip() for a in aliases), node_id
        assert len(set(map(str.lower, aliases))) == len(aliases), f"{node_id}: repeated alias"


def test_the_names_users_search_for_find_their_node():
    aliases = {node_id: {a.lower() for a in ast.literal_eval(kw["search_aliases"])} for node_id, kw in _schemas().items()}
    expected = {"AttnGuidePAG": {"pag", "perturbed attention"}, "AttnGuideSAG": {"sag", "self-attention guidance"},
                "AttnGuideSEGA": {"sega", "semantic guidance"}, "AttnGuidePanorama": {"multidiffusion", "tiled"},
                "AttnGuidePix2PixZeroEdit": {"pix2pix zero"}, "AttnGuideAttendAndExcite": {"attend and excite"}}
    for node_id, names in expected.items():
        assert names <= aliases[node_id], (node_id, aliases[node_id])
