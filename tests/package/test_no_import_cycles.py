"""The pack's modules import one another without a cycle, counting imports made inside functions
too, and the WebUI layer imports its own modules at module level only (a function-local import of a
pack module is how a cycle hides). Read from the source (ast), relative imports resolved; lazy
imports of host modules (modules.*, gradio, ...) are not the pack's and stay allowed."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["attention", "guidance", "methods", "nodes", "comfyui", "scripts", "__init__.py", "install.py"]
PACK_NAME = "attnguide"  # the package the pack root is loaded as (ComfyUI, scripts/attnguide_webui/pack_loader.py)
WEBUI = ("scripts", "attnguide_webui")


def modules(root, entries):
    """{dotted name relative to the pack root ('' for its __init__.py): path}."""
    paths = []
    for entry in entries:
        p = root / entry
        paths += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    out = {}
    for path in paths:
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _package(name, path):
    parts = name.split(".") if name else []
    return parts if path.name == "__init__.py" else parts[:-1]


def _reached(node, name, path):
    """[(module as parts, names imported from it)] for an import statement that reaches into the pack."""
    if isinstance(node, ast.Import):
        return [(a.name.split(".")[1:], []) for a in node.names if a.name.split(".")[0] == PACK_NAME]
    module = node.module.split(".") if node.module else []
    names = [a.name for a in node.names]
    if not node.level:
        return [(module[1:], names)] if module[:1] == [PACK_NAME] else []
    package = _package(name, path)
    if node.level - 1 > len(package):
        return []  # above the pack root
    return [(package[:len(package) - node.level + 1] + module, names)]


def imports(name, path, known):
    """[(target module, line, inside a function)] for the imports of `name` that reach a module in `known`;
    `from package import submodule` reaches the submodule, `from package import name` the package."""
    tree = ast.parse(path.read_text(), str(path))
    local = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for module, names in _reached(node, name, path):
            target = ".".join(module)
            for n in names or [None]:
                sub = ".".join(module + [n]) if n else target
                hit = sub if sub in known else target
                if hit in known and hit != name:
                    out.append((hit, node.lineno, id(node) in local))
    return out


def graph(root, entries):
    known = modules(root, entries)
    return {name: imports(name, path, known) for name, path in known.items()}, known


def cycle(edges):
    """One import cycle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for target, _, _ in edges.get(n, ()):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


# The one cycle left, both ends inside functions: the pack's __init__.py imports nodes/ in comfy_entrypoint(),
# nodes/__init__.py reads HOST_TOO_OLD from it in get_node_list(). __init__.py may not import the pack at
# module level (pytest imports it as a bare module; nothing of the pack loads before ComfyUI asks).
KNOWN = {("nodes", "")}


def test_no_import_cycle():
    edges, _ = graph(ROOT, PRODUCT)
    assert all(any(t == target for t, _, _ in edges[source]) for source, target in KNOWN), "drop the gone edge from KNOWN"
    edges = {n: [e for e in out if (n, e[0]) not in KNOWN] for n, out in edges.items()}
    assert cycle(edges) is None, " -> ".join(m or PACK_NAME for m in cycle(edges))


def test_webui_imports_its_own_modules_at_module_level():
    edges, known = graph(ROOT, PRODUCT)
    webui = [n for n, path in known.items() if path.relative_to(ROOT).parts[:2] == WEBUI]
    local = [f"{known[n].relative_to(ROOT)}:{line} imports {target} inside a function"
             for n in webui for target, line, inside in edges[n] if inside]
    assert local == []


def test_the_checks_see_a_cycle_and_a_local_import(tmp_path):
    """The reader on a made-up pack: a lazy relative import closing a cycle, and an absolute one."""
    pkg = tmp_path / "scripts" / "attnguide_webui"
    (pkg / "a1111").mkdir(parents=True)
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "methods.py").write_text("X = 1\n")
    (pkg / "__init__.py").write_text("from .script import S\n")
    (pkg / "script.py").write_text("from .a1111 import backend\nS = 1\n")
    (pkg / "a1111" / "__init__.py").write_text("")
    (pkg / "a1111" / "backend.py").write_text("from ..errors import E\n\ndef f():\n    from ..script import S\n")
    (pkg / "errors.py").write_text("import attnguide.methods\nE = 1\n")
    edges, known = graph(tmp_path, ["__init__.py", "methods.py", "scripts"])
    assert cycle(edges) == ["scripts.attnguide_webui.script", "scripts.attnguide_webui.a1111.backend",
                            "scripts.attnguide_webui.script"]
    assert ("scripts.attnguide_webui.script", 4, True) in edges["scripts.attnguide_webui.a1111.backend"]
    assert ("methods", 1, False) in edges["scripts.attnguide_webui.errors"]
    assert ("scripts.attnguide_webui.script", 1, False) in edges["scripts.attnguide_webui"]
    (pkg / "a1111" / "backend.py").write_text("from ..errors import E\n")
    assert cycle(graph(tmp_path, ["__init__.py", "methods.py", "scripts"])[0]) is None
