"""Layers import downward only (docs/DESIGN.md §6): an AST walk over the package."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ctmorph"

# module prefix -> ctmorph subpackages it must not import
FORBIDDEN = {
    "_kernels": ("io", "segment", "morphometry", "pipeline", "batch", "cli", "report", "qc"),
    "io": ("_kernels", "segment", "morphometry", "pipeline", "batch", "cli", "report"),
    "report": ("_kernels", "pipeline", "batch", "cli"),
    "morphometry": ("pipeline", "batch", "cli", "io", "report"),
    "segment": ("pipeline", "batch", "cli", "report"),
    "pipeline": ("batch", "cli"),
    "batch": ("cli",),
    # QC pictures and flags: fed by the pipeline, never reaching back into it
    "qc": ("pipeline", "batch", "cli"),
    # a generic executor adapter: it knows nothing of scans
    "distributed": ("_kernels", "io", "segment", "morphometry", "pipeline", "batch", "cli",
                    "report", "qc"),
    # the process pool: generic too
    "workers": ("_kernels", "io", "segment", "morphometry", "pipeline", "batch", "cli",
                "report", "qc", "outputs"),
    # the review page reads what a run wrote, like the report
    "review": ("_kernels", "segment", "morphometry", "pipeline", "batch", "cli"),
    # what a run writes: below the batch that decides what to write
    "outputs": ("batch", "cli", "report"),
    # text made safe for CSV and Markdown: the standard library only, every layer may use it
    "textsafe": ("_kernels", "io", "segment", "morphometry", "pipeline", "batch", "cli",
                 "report", "qc", "outputs", "workers", "config", "calibration"),
}


def _imports(path: Path) -> set[str]:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n for n in found if n.startswith("ctmorph")}


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_go_downward(path):
    rel = path.relative_to(PKG)
    layer = rel.parts[0].removesuffix(".py")
    banned = FORBIDDEN.get(layer, ())
    for name in _imports(path):
        target = name.split(".")[1] if "." in name else ""
        assert target not in banned, f"{rel} imports {name}, against the layering"
    if layer != "cli":
        assert not any(n.startswith("ctmorph.cli") for n in _imports(path))
