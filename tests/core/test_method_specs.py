"""methods/: every method's parameters once. The parameter tables of docs/<method>.md are checked against
them (type, default, range and step), and the specs against what the hosts need of them."""
import re
from pathlib import Path

import pytest

from attnguide.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
NODE_TYPE = {"float": "FLOAT", "int": "INT", "text": "STRING", "choice": "COMBO"}
ROW = re.compile(r"^\| `(\w+)` \| ([A-Z]+)[^|]*\| ([^|]*)\|(?: ([^|]*)\|)? [^|]*\|$")


def _number(text):
    return float(text.replace("−", "-"))


def _sections(text):
    """{node id: table rows of its section}, by the node ids named in each heading."""
    out = {}
    for section in ("\n" + text).split("\n# ")[1:] + ("\n" + text).split("\n## ")[1:]:
        heading, _, body = section.partition("\n")
        rows = [ROW.match(line) for line in body.split("\n## ")[0].splitlines()]
        for node_id in re.findall(r"`(AttnGuide\w+)`", heading):
            out[node_id] = [m.groups() for m in rows if m]
    return out


def _table_rows():
    sections = {}
    for page in sorted((ROOT / "docs").glob("*.md")):
        sections.update({k: v for k, v in _sections(page.read_text()).items() if v})
    for spec in METHODS.values():
        params = {p.name: p for p in (*spec.params, *spec.concept_params)}
        node_ids = [n for n in sections if n.startswith(spec.node_id[:-4] if spec.key == "pix2pix_zero" else spec.node_id)]
        if spec.key == "sega":
            node_ids = ["AttnGuideSEGAConcept"]
        for node_id in node_ids:
            for name, kind, default, span in sections[node_id]:
                if name in params and not (spec.key == "attend_excite" and name == "prompt"):
                    yield pytest.param(params[name], kind, default.strip(), (span or "").strip(), id=f"{node_id}.{name}")


@pytest.mark.parametrize("param, kind, default, span", list(_table_rows()))
def test_readme_tables_are_the_specs(param, kind, default, span):
    assert kind == NODE_TYPE[param.kind]
    shown = default.strip("`\"")
    if param.numeric:
        assert _number(shown) == param.default
    else:
        assert shown == str(param.default)
    numbers = re.match(r"^(−?[\d.]+) – (−?[\d.]+)(?: \(([\d.]+)\))?$", span)
    if param.numeric and numbers:
        lo, hi, step = numbers.groups()
        assert (_number(lo), _number(hi)) == (param.minimum, param.maximum)
        assert step is None or _number(step) == (param.step or 1)


def test_every_method_has_its_table_in_the_docs():
    names = {request.id.split(".")[0] for request in _table_rows()}
    assert {"AttnGuideSAG", "AttnGuidePAG", "AttnGuideSEGAConcept", "AttnGuideAttendAndExcite", "AttnGuidePanorama",
            "AttnGuidePix2PixZeroInvert"} <= names


def test_specs_are_complete_and_consistent():
    for spec in METHODS.values():
        names = [p.name for p in (*spec.params, *spec.concept_params)]
        assert len(names) == len(set(names)) or spec.concept_params, spec.key
        for p in (*spec.params, *spec.concept_params):
            assert p.label and p.tooltip and p.kind in NODE_TYPE, (spec.key, p.name)
            if p.numeric:
                assert p.minimum <= p.default <= p.maximum, (spec.key, p.name)
            if p.kind == "choice":
                assert p.default in p.choices, (spec.key, p.name)
    assert len({spec.short for spec in METHODS.values()}) == len(METHODS)
