"""The import-linter contracts in pyproject.toml hold on this tree, and break on an upward import.

Each case copies the package, adds one import that points up, and runs ``lint-imports`` with the
project's own contracts against the copy: a contract that stayed quiet there would guard nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "contactsync"
CONFIG = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(source_root: Path, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts over the ``contactsync`` found in ``source_root``."""
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", str(CONFIG)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(ROOT / "src", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "added", "edge", "contract"),
    [
        pytest.param(
            "listener/app.py",
            "\n\ndef _admin() -> None:\n    from contactsync.web import create_listener_web_app\n",
            "contactsync.listener.app -> contactsync.web",
            "An engine never imports a face",
            id="engine-imports-a-face-lazily",
        ),
        pytest.param(
            "wire/payload.py",
            "\nimport contactsync.settings\n",
            "contactsync.wire.payload -> contactsync.settings",
            "wire and shortcodes import only errors",
            id="wire-reads-settings",
        ),
        pytest.param(
            "shortcodes/template.py",
            "\nimport contactsync.wire\n",
            "contactsync.shortcodes.template -> contactsync.wire",
            "Faces → engines → db",
            id="shortcodes-imports-wire",
        ),
        pytest.param(
            "delivery/outbox.py",
            "\nimport contactsync.automation.rules\n",
            "contactsync.delivery.outbox -> contactsync.automation.rules",
            "Faces → engines → db",
            id="delivery-imports-automation",
        ),
        pytest.param(
            "db/engine.py",
            "\nimport contactsync.listener.inbox\n",
            "contactsync.db.engine -> contactsync.listener.inbox",
            "Faces → engines → db",
            id="db-imports-an-engine",
        ),
    ],
)
def test_an_upward_import_breaks_a_contract(
    tmp_path: Path, module: str, added: str, edge: str, contract: str
) -> None:
    shutil.copytree(PACKAGE, tmp_path / "contactsync", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    with (tmp_path / "contactsync" / module).open("a") as source:
        source.write(added)
    result = lint_imports(tmp_path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken
    assert edge in broken


def test_a_module_without_a_layer_breaks_the_layers(tmp_path: Path) -> None:
    """``exhaustive``: a new top-level module has to be given its place in the contract."""
    shutil.copytree(PACKAGE, tmp_path / "contactsync", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (tmp_path / "contactsync" / "newcomer.py").write_text('"""Not yet placed."""\n')
    result = lint_imports(tmp_path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "contactsync.newcomer" in result.stdout
