"""The layers import only downwards (online/batch -> engines -> kernels; gpu_core at the bottom), kernels
import nothing of the project but their array shim, and online and batch meet only through the stores."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("gpu_core", "kernels", "engines", "batch", "online")
# what each layer may import from the project (besides itself)
ALLOWED = {
    "gpu_core": set(),
    "kernels": set(),
    "engines": {"gpu_core", "kernels"},
    "batch": {"gpu_core", "kernels", "engines"},
    "online": {"gpu_core", "kernels", "engines"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_downwards(layer):
    bad = []
    for p in sorted((ROOT / layer).rglob("*.py")):
        wrong = (_imports(p) & set(LAYERS)) - {layer} - ALLOWED[layer]
        if wrong:
            bad.append(f"{p.relative_to(ROOT)} imports {sorted(wrong)}")
    assert not bad, bad
