"""The files `comfy node publish` puts in the Comfy Registry zip, and a scan of them for what the
registry's scanner flags.

comfy-cli zips `git ls-files` minus the paths its `.comfyignore` patterns match (gitwildmatch via
pathspec; blank lines and lines starting with # skipped). `ignore_matcher` reads the same file the
same way; it implements the gitwildmatch subset a .comfyignore here may use (no `!` negation) and
tests/package/test_registry_ready.py checks it against pathspec wherever pathspec is installed.
"""
import ast
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def patterns(path):
    """The pattern lines of an ignore file, as comfy-cli reads them."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _regex(pattern):
    if pattern.startswith("!"):
        raise ValueError(f"negated pattern {pattern!r}: not in the subset this reader implements")
    directory = pattern.endswith("/")
    body = pattern.strip("/")
    anchored = pattern.startswith("/") or "/" in body
    out = []
    i = 0
    while i < len(body):
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(body[i]))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    # a directory pattern matches what lies under it; a plain one also matches a directory's contents
    suffix = "/.*" if directory else "(?:/.*)?"
    return re.compile(f"^{prefix}{''.join(out)}{suffix}$")


def ignore_matcher(lines):
    """fn(relative posix path) -> True where a pattern matches (comfy-cli leaves the file out)."""
    regexes = [_regex(p) for p in lines]
    return lambda rel: any(r.match(rel) for r in regexes)


def candidate_files(root=ROOT):
    """Tracked files plus untracked ones git does not ignore (what the next commit may publish).
    Without git: every file but those .gitignore names, as comfy-cli zips every file then."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout
        files = [line for line in out.splitlines() if line.strip()]
        if files:
            return sorted(f for f in set(files) if (Path(root) / f).is_file())
    except (OSError, subprocess.CalledProcessError):
        pass
    gitignored = ignore_matcher(patterns(Path(root) / ".gitignore")) if (Path(root) / ".gitignore").exists() \
        else (lambda rel: False)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        dirnames[:] = [d for d in dirnames if d != ".git" and not gitignored(_join(rel_dir, d) + "/")]
        files += [_join(rel_dir, f) for f in filenames if not gitignored(_join(rel_dir, f))]
    return sorted(files)


def _join(rel_dir, name):
    return name if rel_dir == "." else f"{rel_dir}/{name}"


def published(root=ROOT):
    ignored = ignore_matcher(patterns(Path(root) / ".comfyignore"))
    return [f for f in candidate_files(root) if not ignored(f)]


# --- what the registry's scanner flags -------------------------------------------------------
# The scanner matches text (comments and strings included), so the text rules apply to the whole
# source; the AST rules also catch spellings a text rule would miss (`from os import environ`).

TEXT_RULES = {
    "eval/exec": r"\b(?:eval|exec)\s*\(",
    "process": r"\bsubprocess\b|\bos\.(?:system|popen|spawn\w*|exec\w+)\b|\bPopen\b",
    "pip": r"\bpip\s+install\b|-m\s*['\"]?\s*,?\s*['\"]?pip\b|['\"]pip['\"]\s*,\s*['\"]install['\"]",
    "environment": r"\bos\.environ\b|\b(?:get|put|unset)env\s*\(|\benviron\s*\[",
    "network": r"\burllib\.request\b|\burlopen\b|\burlretrieve\b|\bhttp\.client\b|\brequests\.(?:get|post|put|"
               r"request|Session)\b|\bsocket\.(?:socket|create_connection)\b|\bhttpx\b|\baiohttp\b",
}
NETWORK_MODULES = {"socket", "requests", "httpx", "aiohttp", "urllib3", "http.client", "urllib.request", "ftplib",
                   "smtplib", "telnetlib", "websocket", "websockets"}
PROCESS_MODULES = {"subprocess", "pip", "pty"}
OS_FORBIDDEN = {"environ": "environment", "environb": "environment", "getenv": "environment",
                "putenv": "environment", "unsetenv": "environment", "system": "process", "popen": "process"}
DYNAMIC_BUILTINS = {"eval", "exec", "compile", "__import__"}


def text_findings(source):
    return [(rule, source.count("\n", 0, m.start()) + 1) for rule, pattern in TEXT_RULES.items()
            for m in re.finditer(pattern, source)]


def ast_findings(source, filename="<source>"):
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Name) and node.id in DYNAMIC_BUILTINS:  # called, or passed on under another name
            found.append(("eval/exec", node.lineno))
        elif isinstance(node, ast.Attribute) and node.attr in DYNAMIC_BUILTINS and isinstance(node.value, ast.Name) \
                and node.value.id == "builtins":
            found.append(("eval/exec", node.lineno))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name in NETWORK_MODULES or name.split(".")[0] in NETWORK_MODULES - {"http.client", "urllib.request"}:
                    found.append(("network", node.lineno))
                elif name.split(".")[0] in PROCESS_MODULES:
                    found.append(("process", node.lineno))
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                found += [(OS_FORBIDDEN[a.name], node.lineno) for a in node.names if a.name in OS_FORBIDDEN]
            if isinstance(node, ast.ImportFrom) and node.module in ("urllib", "http"):
                found += [("network", node.lineno) for a in node.names if a.name in ("request", "client")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in OS_FORBIDDEN:
            found.append((OS_FORBIDDEN[node.attr], node.lineno))
    return found


def findings(path):
    """[(rule, line)] for one Python file: the text rules and the AST rules together."""
    source = Path(path).read_text(encoding="utf-8")
    return sorted(set(text_findings(source) + ast_findings(source, str(path))))
