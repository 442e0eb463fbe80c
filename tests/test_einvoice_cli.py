"""``python -m bbvisma einvoice FILE...``: JSON per file and exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from bbvisma.__main__ import main
from bbvisma.reference import reference_dir

EINVOICES = reference_dir() / "einvoices"
GOOD_PDF = EINVOICES / "zugferd-pdf" / "zugferd_2p0_EXTENDED_Warenrechnung.pdf"
GOOD_UBL = EINVOICES / "ubl" / "ubl-tc434-creditnote1.xml"
MINIMUM = EINVOICES / "zugferd-pdf" / "zugferd_2p0_MINIMUM.pdf"
REPO = Path(__file__).resolve().parents[1]


def _run(capsys, *argv: str) -> tuple[int, list[dict]]:
    code = main(["einvoice", *argv])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.strip()]


def test_readable_files_print_document_lines_and_both_totals_and_exit_0(capsys):
    code, results = _run(capsys, str(GOOD_PDF), str(GOOD_UBL))
    assert code == 0
    assert [r["file"] for r in results] == [str(GOOD_PDF), str(GOOD_UBL)]
    first = results[0]
    assert first["ok"] is True
    assert set(first) == {"file", "ok", "document", "lines", "totals"}
    assert first["document"]["number"] == "R87654321012345"
    assert first["document"]["payment_terms"]["discount_percent"] == "2.00"
    assert "lines" not in first["document"] and "totals" not in first["document"]
    assert len(first["lines"]) == 6
    assert first["lines"][0]["sku"] == "ZS997"
    stated, computed = first["totals"]["document"], first["totals"]["computed_from_lines"]
    line_sum = sum(Decimal(line["line_net_amount"]) for line in first["lines"])
    assert Decimal(computed["line_total"]) == line_sum == Decimal(stated["line_total"])
    for key in ("tax_basis_total", "tax_total", "grand_total", "due_payable"):
        assert Decimal(computed[key]) == Decimal(stated[key]), key
    credit = results[1]["document"]
    assert credit["is_credit_note"] is True
    assert credit["buyer_email"] == "pete.smith@mycustomercompany.be"


def test_a_refused_file_prints_cause_and_reason_and_exits_1(capsys):
    code, results = _run(capsys, str(GOOD_PDF), str(MINIMUM))
    assert code == 1
    assert results[0]["ok"] is True
    refused = results[1]
    assert set(refused) == {"file", "ok", "cause", "reason"}
    assert (refused["ok"], refused["cause"]) == (False, "no_lines")
    assert "751" in refused["reason"]


def test_a_missing_file_is_a_usage_error(capsys, tmp_path):
    code, results = _run(capsys, str(tmp_path / "nope.xml"))
    assert code == 2
    assert results == [
        {
            "file": str(tmp_path / "nope.xml"),
            "ok": False,
            "cause": "unreadable_file",
            "reason": results[0]["reason"],
        }
    ]
    assert "nope.xml" in results[0]["reason"]


@pytest.mark.parametrize("argv", [[], ["einvoice"], ["no-such-command"], ["einvoice", "--x"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_indent_pretty_prints(capsys):
    assert main(["einvoice", "--indent", "2", str(GOOD_UBL)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") > 50
    assert json.loads(out)["document"]["number"] == "018304 / 28865"


def test_python_dash_m_bbvisma_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "bbvisma", "einvoice", str(GOOD_UBL), str(MINIMUM)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["ok"] for r in results] == [True, False]
