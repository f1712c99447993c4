"""``contactsync wire decode`` / ``wire encode``: what PHP sees, and warnings naming PHP's limits."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from contactsync.cli import app

runner = CliRunner()


def test_decode_prints_pretty_json_in_php_order() -> None:
    result = runner.invoke(app, ["wire", "decode"], input="b=2&a[]=x&a[5]=y&a[]=z&c.d=%FF\n")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert list(json.loads(result.stdout)) == ["b", "a", "c_d"]
    assert json.loads(result.stdout)["a"] == {"0": "x", "5": "y", "6": "z"}
    assert '"c_d": "\\udcff"' in result.stdout


def test_decode_json_out_keeps_key_types() -> None:
    result = runner.invoke(app, ["wire", "decode", "--json-out", "--source", "get"], input="a[1]=x&a[01]=y&&")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [["a", [[1, "x"], ["01", "y"]]]]


def test_decode_print_r_is_phps() -> None:
    result = runner.invoke(app, ["wire", "decode", "--print-r"], input="a[b][]=1&c=")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(
        "Array\n(\n    [a] => Array\n        (\n            [b] => Array\n                (\n"
        "                    [0] => 1\n                )\n\n        )\n\n    [c] => \n)\n"
    )


def test_decode_warns_about_each_limit() -> None:
    body = "&".join(f"v{i}=1" for i in range(1002)) + "&x" + "[y]" * 65 + "=1"
    result = runner.invoke(app, ["wire", "decode", "--source", "get"], input=body)
    assert result.exit_code == 0, result.output
    assert "warning: max_input_vars: 1003 variables; PHP keeps 1000 (GET)" in result.stderr
    assert "warning: max_input_nesting_level: nesting depth 65" in result.stderr
    assert len(json.loads(result.stdout)) == 1000


def test_decode_rejects_an_unknown_source() -> None:
    result = runner.invoke(app, ["wire", "decode", "--source", "cookie"], input="a=1")
    assert result.exit_code == 2


def test_encode_reads_json() -> None:
    result = runner.invoke(app, ["wire", "encode"], input='{"a": [1, 2.5, true, null], "b c": "é~"}')
    assert result.exit_code == 0, result.output
    assert result.stdout == "a%5B0%5D=1&a%5B1%5D=2.5&a%5B2%5D=1&b+c=%C3%A9%7E\n"
    rfc3986 = runner.invoke(app, ["wire", "encode", "--rfc3986"], input='{"b c": "é~"}')
    assert rfc3986.stdout == "b%20c=%C3%A9~\n"


def test_encode_warns_when_php_would_truncate() -> None:
    result = runner.invoke(
        app, ["wire", "encode"], input=json.dumps({"fields": [{"id": i} for i in range(1200)]})
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: max_input_vars: 1200 variables; PHP keeps 1001 (POST)\n"


def test_encode_refuses_what_is_not_json() -> None:
    assert runner.invoke(app, ["wire", "encode"], input="a=1").exit_code == 2
    assert runner.invoke(app, ["wire", "encode"], input='"text"').exit_code == 2
