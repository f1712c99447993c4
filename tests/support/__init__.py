"""Helpers shared by the tests (importable as ``support`` thanks to ``pythonpath``)."""

from __future__ import annotations

import os
import subprocess

IN_CI = os.environ.get("CI", "").lower() == "true"


def examples(ci: int, local: int | None = None) -> int:
    """Hypothesis example count: the full count in CI, a quicker one on a developer machine."""
    if IN_CI or os.environ.get("CONTACTSYNC_FULL_EXAMPLES"):
        return ci
    return local if local is not None else max(ci // 5, 20)


def run_php(php_bin: str, code: str, stdin: bytes = b"", *, ini: dict[str, str] | None = None) -> bytes:
    """Run a PHP snippet (without ``<?php``) and return its stdout; raise on a PHP error."""
    args = [php_bin, "-d", "display_errors=stderr", "-d", "error_reporting=E_ALL"]
    for key, value in (ini or {}).items():
        args += ["-d", f"{key}={value}"]
    done = subprocess.run([*args, "-r", code], input=stdin, capture_output=True, check=False, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"php failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return done.stdout
