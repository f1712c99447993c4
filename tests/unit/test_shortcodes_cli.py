"""``contactsync render``: the URL on stdout, or the error with a caret under its column and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from contactsync.cli import app

runner = CliRunner()


def test_render_from_stdin_normalizes_keys() -> None:
    contact = {"email": "jane.doe@ACME.com", "Shortcode-1": "a b", "First name": "ann", "FIELD_7": 3}
    result = runner.invoke(
        app,
        [
            "render",
            "--template",
            "https://x.test/?d=[#PROPER EMAIL/2#]&s=[#SHORTCODE-1#]&f=[#PROPER FIRST_NAME#]&n=[#FIELD_7#]",
            "--contact",
            "-",
        ],
        input=json.dumps(contact),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "https://x.test/?d=Acme.Com&s=a+b&f=Ann&n=3\n"


def test_render_from_file_with_now_and_country_code(tmp_path: Path) -> None:
    path = tmp_path / "contact.json"
    path.write_text(json.dumps({"PHONE": "07911 123456"}), encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "render",
            "-t",
            "https://x.test/?p=[#PHONE_E164 PHONE#]&d=[#DATEADD:1 NOW#]",
            "-c",
            str(path),
            "--now",
            "2026-03-07T10:00:00+00:00",
            "--country-code",
            "44",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "https://x.test/?p=447911123456&d=2026-03-08+10%3A00%3A00\n"


def test_render_error_prints_caret_and_exits_1() -> None:
    template = "https://x.test/?a=[#UPPER EMIAL#]"
    result = runner.invoke(app, ["render", "-t", template, "--fields", "FIRST_NAME"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "error: unknown field `EMIAL` at 1:27 — did you mean `EMAIL`?"
    assert lines[1] == template
    assert lines[2] == " " * 26 + "^"


def test_render_warns_about_long_urls() -> None:
    result = runner.invoke(
        app, ["render", "-t", "https://x.test/?a=[#X#]", "-c", "-"], input='{"X": "' + "a" * 9000 + '"}'
    )
    assert result.exit_code == 0
    assert "warning: the rendered URL is 9018 bytes" in result.stderr


def test_render_rejects_bad_contact_json() -> None:
    result = runner.invoke(app, ["render", "-t", "https://x.test/", "-c", "-"], input="[1, 2]")
    assert result.exit_code == 1
    assert "JSON object" in result.stderr


def test_installed_script_exit_code() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "contactsync", "render", "-t", "https://x.test[#X#]/"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[1:] == ["https://x.test[#X#]/", " " * 14 + "^"]
