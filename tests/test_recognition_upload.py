"""Reading a recognition list: CSV in UTF-8 or GBK, XLSX, and a full report of bad rows."""

import io
from datetime import datetime
from typing import Any

import openpyxl
import pytest

from domain.errors import FieldError, InvalidInput
from domain.recognition.upload import (
    MAX_LISTED_ERRORS,
    MAX_UPLOAD_BYTES,
    UploadedRow,
    read_upload,
)
from tests.fixtures.factories import new_uscc

FIGURES = ("renovation_investment_fen", "rd_expense_fen")


def _csv(*lines: str, encoding: str = "utf-8") -> bytes:
    return "\n".join(lines).encode(encoding)


def _xlsx(*rows: tuple[Any, ...]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _rejected(
    content: bytes,
    filename: str | None = "list.csv",
    figure_kinds: tuple[str, ...] = FIGURES,
    max_rows: int = 100_000,
) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        read_upload(content, filename, figure_kinds, max_rows=max_rows)
    return caught.value


def _only(rejected: InvalidInput) -> FieldError:
    assert len(rejected.errors) == 1, rejected.errors
    return rejected.errors[0]


def test_utf8_csv_with_bom_and_chinese_headers() -> None:
    a, b = new_uscc(), new_uscc()
    content = _csv(
        "统一社会信用代码,企业名称,技改设备投资额,研发费用",
        f"{a},湖州甲纺织有限公司,150000000,2000000",
        f"{b.lower()},湖州乙机械有限公司, 300000000 ,0",
        encoding="utf-8-sig",
    )
    assert read_upload(content, "名单.csv", FIGURES) == [
        UploadedRow(2, a, {"renovation_investment_fen": 150_000_000, "rd_expense_fen": 2_000_000}),
        UploadedRow(3, b, {"renovation_investment_fen": 300_000_000, "rd_expense_fen": 0}),
    ]


def test_gbk_csv_as_excel_saves_it() -> None:
    uscc = new_uscc()
    content = _csv(
        "信用代码,企业名称,研发费用",
        f"{uscc},湖州丙电子有限公司,880000",
        encoding="gbk",
    )
    rows = read_upload(content, "名单.csv", ["rd_expense_fen"])
    assert rows == [UploadedRow(2, uscc, {"rd_expense_fen": 880_000})]


def test_english_headers_ignore_case_whitespace_and_bom_and_the_column_order() -> None:
    uscc = new_uscc()
    content = _csv(
        "\ufeff RD_Expense_Fen , USCC ,Name",
        f"5, {uscc} ,someone",
    )
    assert read_upload(content, None, ["rd_expense_fen"]) == [
        UploadedRow(2, uscc, {"rd_expense_fen": 5})
    ]


def test_blank_lines_are_skipped_and_lines_keep_their_numbers() -> None:
    a, b = new_uscc(), new_uscc()
    content = _csv("uscc,rd_expense_fen", "", f"{a},1", ",", f"{b},2", "")
    rows = read_upload(content, "list.csv", ["rd_expense_fen"])
    assert [(r.line, r.uscc) for r in rows] == [(3, a), (5, b)]


def test_a_quoted_cell_over_two_lines_does_not_shift_the_line_numbers() -> None:
    a, b = new_uscc(), new_uscc()
    content = _csv("uscc,name", f'{a},"湖州\n某公司"', f"{b},x")
    assert [r.line for r in read_upload(content, "list.csv", [])] == [2, 4]


def test_credit_codes_only_for_a_fixed_amount() -> None:
    a, b = new_uscc(), new_uscc()
    assert read_upload(_csv("uscc", a, b), "list.csv", []) == [
        UploadedRow(2, a, {}),
        UploadedRow(3, b, {}),
    ]
    with_names = _csv("企业名称,统一社会信用代码", f"甲公司,{a}")
    assert read_upload(with_names, "list.csv", []) == [UploadedRow(2, a, {})]


def test_xlsx_first_sheet_numbers_and_text() -> None:
    a, b, c = new_uscc(), new_uscc(), new_uscc()
    content = _xlsx(
        ("统一社会信用代码", "企业名称", "renovation_investment_fen", "研发费用"),
        (a, "甲公司", 150_000_000, 1_500_000.0),
        (None, None, None, None),
        (b, "乙公司", " 2000 ", "0"),
        (c, None, 7, 8, None, None),  # trailing empty cells are no extra cells
    )
    # Sniffed from the content: the name says nothing.
    assert read_upload(content, None, FIGURES) == [
        UploadedRow(2, a, {"renovation_investment_fen": 150_000_000, "rd_expense_fen": 1_500_000}),
        UploadedRow(4, b, {"renovation_investment_fen": 2000, "rd_expense_fen": 0}),
        UploadedRow(5, c, {"renovation_investment_fen": 7, "rd_expense_fen": 8}),
    ]


def test_xlsx_numbers_and_dates_in_non_integer_columns() -> None:
    uscc = new_uscc()
    content = _xlsx(
        ("uscc", "region_code", "high_tech", "established_on"),
        (uscc, 330502, "true", datetime(2012, 3, 4)),  # noqa: DTZ001 (as openpyxl reads it)
    )
    [row] = read_upload(content, "list.xlsx", ["region_code", "high_tech", "established_on"])
    assert row.figures == {
        "region_code": "330502",
        "high_tech": True,
        "established_on": datetime(2012, 3, 4).date(),  # noqa: DTZ001
    }


def test_xlsx_fraction_of_a_fen_is_refused() -> None:
    content = _xlsx(("uscc", "rd_expense_fen"), (new_uscc(), 1500.5))
    error = _only(_rejected(content, filename="list.xlsx", figure_kinds=("rd_expense_fen",)))
    assert error == FieldError("line 2.rd_expense_fen", "must be an integer")


def test_a_list_of_a_hundred_thousand_rows_is_read_whole() -> None:
    codes = [new_uscc() for _ in range(100_000)]
    content = _csv("uscc,rd_expense_fen", *(f"{code},{n}" for n, code in enumerate(codes)))
    rows = read_upload(content, "list.csv", ["rd_expense_fen"])
    assert len(rows) == 100_000 and rows[-1].figures == {"rd_expense_fen": 99_999}


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (b"", "list.csv", "is empty"),
        (b"\r\n\n , \n", "list.csv", "is empty"),
        (b"uscc,rd_expense_fen,renovation_investment_fen\n\n", "list.csv", "has no data rows"),
        (b"\xff\xfeu\x00s\x00", "list.csv", "neither UTF-8 nor GBK"),
        (b"PK\x03\x04 not really a zip", "list.xlsx", "not a readable .xlsx"),
        (b"uscc\n91330502T00000001X\n", "list.xlsx", "not a valid .xlsx"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), None, "请另存为 .xlsx 或 .csv"),
        (b"<table><tr><td>uscc</td></tr></table>", "名单.XLS", "请另存为 .xlsx 或 .csv"),
    ],
)
def test_unreadable_files(content: bytes, filename: str | None, message: str) -> None:
    error = _only(_rejected(content, filename=filename))
    assert error.field == "file"
    assert message in error.message


def test_too_big() -> None:
    error = _only(_rejected(b"uscc\n" + b" " * MAX_UPLOAD_BYTES))
    assert error.field == "file" and "32 MB" in error.message


def test_too_many_rows() -> None:
    content = _csv("uscc", new_uscc(), new_uscc(), new_uscc())
    assert len(read_upload(content, "list.csv", [], max_rows=3)) == 3
    error = _only(_rejected(content, figure_kinds=(), max_rows=2))
    assert error == FieldError("file", "has more than 2 rows: split it into several uploads")


def test_header_problems_are_all_listed() -> None:
    content = _csv("uscc,信用代码,研发费用,tecnology_fen,,name", f"{new_uscc()},x,1,2,3,n")
    errors = _rejected(content).errors
    assert [e.field for e in errors] == ["file"] * 4
    assert [e.message.split(":")[0] for e in errors] == [
        "duplicated column uscc (columns 1 and 2)",
        "unknown column tecnology_fen",
        "column 5 has no header",
        "missing column renovation_investment_fen (技改设备投资额)",
    ]


def test_a_figure_the_item_does_not_read_is_an_unknown_column() -> None:
    content = _csv("uscc,revenue_fen", f"{new_uscc()},1")
    error = _only(_rejected(content, figure_kinds=()))
    expected = "uscc (统一社会信用代码), name (企业名称)"
    assert error == FieldError("file", f"unknown column revenue_fen: expected {expected}")


def test_missing_credit_code_column() -> None:
    error = _only(_rejected(_csv("企业名称", "甲公司"), figure_kinds=()))
    assert error == FieldError("file", "missing column uscc (统一社会信用代码)")


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("91330502MA2B3C4D5X,1,2", "line 2.uscc", "check character"),
        ("91330502MA2B3C4D5,1,2", "line 2.uscc", "18 characters"),
        (",1,2", "line 2.uscc", "is required"),
        ("{uscc},,2", "line 2.renovation_investment_fen", "is required"),
        ("{uscc},1,", "line 2.rd_expense_fen", "is required"),
        ('{uscc},"1,500,000",2', "line 2.renovation_investment_fen", "must be an integer"),
        ("{uscc},1.5,2", "line 2.renovation_investment_fen", "must be an integer"),
        ("{uscc},1,-2", "line 2.rd_expense_fen", "must be between 0 and"),
        ("{uscc},1,2,3", "line 2", "has more cells than the header's 3 columns"),
    ],
)
def test_bad_row(row: str, field: str, message: str) -> None:
    content = _csv("uscc,renovation_investment_fen,rd_expense_fen", row.format(uscc=new_uscc()))
    error = _only(_rejected(content))
    assert error.field == field
    assert message in error.message


def test_a_credit_code_twice_is_refused_on_its_second_line() -> None:
    uscc = new_uscc()
    content = _csv("uscc", uscc, new_uscc(), uscc.lower())
    assert _only(_rejected(content, figure_kinds=())) == FieldError(
        "line 4.uscc", f"{uscc} is already on line 2"
    )


def test_three_bad_rows_are_all_listed_and_nothing_is_accepted() -> None:
    content = _csv(
        "uscc,rd_expense_fen",
        f"{new_uscc()},1",
        f"{new_uscc()},x",
        f"{new_uscc()},2",
        "NOTACODE,3",
        f"{new_uscc()},",
    )
    rejected = _rejected(content, figure_kinds=("rd_expense_fen",))
    assert rejected.detail == "3 error(s); nothing was accepted"
    assert [e.field for e in rejected.errors] == [
        "line 3.rd_expense_fen",
        "line 5.uscc",
        "line 6.rd_expense_fen",
    ]


def test_a_huge_bad_file_lists_the_first_errors_and_counts_them_all() -> None:
    bad = MAX_LISTED_ERRORS + 500
    content = _csv("uscc", *(["NOTACODE"] * bad))
    rejected = _rejected(content, figure_kinds=())
    assert rejected.detail == f"{bad} error(s); nothing was accepted"
    assert len(rejected.errors) == MAX_LISTED_ERRORS + 1
    assert rejected.errors[-1] == FieldError("file", "... and 500 more errors")


def test_an_unknown_fact_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown fact kinds: tecnology_fen"):
        read_upload(_csv("uscc", new_uscc()), "list.csv", ["tecnology_fen"])
