"""Every import runs down the layers (issue 18, PRODUCT.md §16): a module may import its own
layer and those below it, never one above. Imports inside functions and under TYPE_CHECKING
count too: a lazy import is still a dependency.

    cli, demo, fake_upstream, __main__      the programs
    app, admin                              the assembled application
    api, web, gateway, importers, metrics, health
    keys                                    key service
    ledger, providers                       the ledger and the provider reports it reads
    store, config                           the database; the settings
    domain, errors, redact                  records, categories, money, prices, paths
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tallygate"
LAYERS: dict[str, int] = {
    "domain": 0, "errors": 0, "redact": 0,
    "store": 1, "config": 1,
    "ledger": 2, "providers": 2,
    "keys": 3,
    "api": 4, "web": 4, "gateway": 4, "importers": 4, "metrics": 4, "health": 4,
    "app": 5, "admin": 5,
    "cli": 6, "demo": 6, "fake_upstream": 6, "__main__": 6,
}


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"
                  or path.parent != PACKAGE)


def _layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_every_module_has_a_layer() -> None:
    unknown = sorted({_layer_of(path) for path in _modules()} - set(LAYERS))
    assert not unknown, f"give these a layer in tests/test_layers.py: {unknown}"


def upward_imports(source: str, layer: str) -> list[str]:
    """The imports of ``source``, a module of ``layer``, that reach a layer above it."""
    own = LAYERS[layer]
    upward = []
    for node in ast.walk(ast.parse(source)):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                 [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "tallygate" and len(parts) > 1 and LAYERS.get(parts[1], -1) > own:
                upward.append(f"line {node.lineno}: {name}")
    return upward


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up(path: Path) -> None:
    upward = upward_imports(path.read_text(encoding="utf-8"), _layer_of(path))
    assert not upward, f"{path.relative_to(PACKAGE)} imports from a layer above it: {upward}"


def test_the_check_sees_every_kind_of_upward_import() -> None:
    source = ("from tallygate.ledger.records import CallEvent\n"
              "import tallygate.gateway.limits\n"
              "def late():\n    from tallygate.keys import service\n"
              "from tallygate.domain.records import CallRecord\n")
    assert upward_imports(source, "store") == [
        "line 1: tallygate.ledger.records", "line 2: tallygate.gateway.limits",
        "line 4: tallygate.keys"]
    assert upward_imports(source, "app") == []
