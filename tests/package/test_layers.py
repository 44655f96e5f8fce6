"""The package's layers: every import inside rgemma points down (README, Layout).

Each folder has a rank; a module may import its own folder and folders of lower rank, never
one above or beside it, not even lazily inside a function. Parsed from the source, so an import
that only runs on some path is checked too."""

import ast
from pathlib import Path

import rgemma

ROOT = Path(rgemma.__file__).parent
RANK = {
    "io": 0, "ops": 0, "kernels": 1, "models": 2, "accel": 3, "text": 3, "pretrained": 4,
    "bundled": 5, "convert": 5, "serving": 6, "training": 6, "evaluation": 6, "bench": 7, "cli": 8,
}  # fmt: skip


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "rgemma" and parts[1] in RANK else None


def _imports(path: Path):
    package = "rgemma." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = ".".join(package.split(".")[: -node.level] + ([base] if base else []))
            yield node.lineno, [f"{base}.{alias.name}" for alias in node.names] + [base]


def _violations() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        own = path.relative_to(ROOT).parts[0]
        if own not in RANK:  # the package root (the public API) may import anything
            continue
        for line, names in _imports(path):
            for name in names:
                layer = _layer(name)
                if layer and layer != own and RANK[layer] >= RANK[own]:
                    found.append(
                        f"{path.relative_to(ROOT)}:{line} imports {name} ({layer} is not below {own})"
                    )
    return sorted(set(found))


def test_every_folder_is_ranked():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(RANK)


def test_imports_point_down():
    assert _violations() == []
