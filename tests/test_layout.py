"""The house rules of the package layout (DESIGN.md §2), checked on the source: who may import whom.

* ``face/`` never imports torch or diffusers (face analysis and the swap preview stay light);
* ``diffusion/`` knows models and pixels, never faces;
* a stage never imports another stage, and none imports the layers above it;
* ``workflows`` composes stages; the front doors (cli, server, jobs) call workflows, never a stage;
* the base modules (config, errors, imageio, store, users, registry, download) import nothing of ours
  above them;
* no module over ~600 lines, no function over ~80 (the web UI's declarative layouts aside).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "easyphoto"
BASE = {"config", "errors", "imageio", "store", "users", "registry", "download"}
FRONT_DOORS = {"cli", "server", "jobs"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; imports inside functions included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "easyphoto" else parts[0]


def _ours(imports: set[str]) -> set[str]:
    mods = _modules()
    return {m for m in imports if m in mods}


def test_import_rules() -> None:
    broken = []
    for name, path in sorted(_modules().items()):
        layer = _layer(name)
        imports = _imports(name, path)
        ours = {_layer(m) for m in _ours(imports)} - {layer}
        third = {m.split(".")[0] for m in imports}
        if layer == "face" and ({"torch", "diffusers"} & third or ours - BASE):
            broken.append(f"{name}: face/ imports {sorted(({'torch', 'diffusers'} & third) | (ours - BASE))}")
        if layer == "diffusion" and ours - BASE - {"__init__"}:
            broken.append(f"{name}: diffusion/ imports {sorted(ours - BASE)}")
        if layer in BASE and ours - BASE:
            broken.append(f"{name}: base module imports {sorted(ours - BASE)}")
        if layer == "stages":
            stage = name.split(".")[2] if name.count(".") >= 2 else None
            others = {
                m.split(".")[2]
                for m in _ours(imports)
                if m.startswith("easyphoto.stages.") and m.count(".") >= 2
            }
            if stage and others - {stage}:
                broken.append(f"{name}: stage {stage} imports stage(s) {sorted(others - {stage})}")
            if ours & (FRONT_DOORS | {"workflows"}):
                broken.append(f"{name}: a stage imports {sorted(ours & (FRONT_DOORS | {'workflows'}))}")
        if layer == "workflows" and ours & FRONT_DOORS:
            broken.append(f"{name}: workflows imports {sorted(ours & FRONT_DOORS)}")
        if layer in FRONT_DOORS and "stages" in ours:
            broken.append(f"{name}: a front door imports a stage (call easyphoto.workflows)")
    assert broken == []


def test_sizes() -> None:
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > 620:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        if name.startswith("easyphoto.server.webui"):
            continue  # declarative UI layout
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno >= 85
            ):
                too_long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []


@pytest.mark.parametrize("module", ["easyphoto.face.analyzer", "easyphoto.face.fusion", "easyphoto.cli"])
def test_light_modules_do_not_load_torch(module: str) -> None:
    import subprocess
    import sys

    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
