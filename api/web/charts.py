"""Charts of the dashboards: Bokeh figures built here, embedded as JSON items that
BokehJS, served by the platform from the bokeh package, draws on a canvas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bokeh.embed import json_item
from bokeh.embed.standalone import StandaloneEmbedJson
from bokeh.models import ColumnDataSource, DataRange1d, FactorRange, HoverTool, Range1d
from bokeh.models.annotations import Span
from bokeh.plotting import figure
from bokeh.transform import factor_cmap

from api.web.format import format_fen, wan_number

# System fonts only: the government network has no web fonts.
FONT = '"PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC", sans-serif'
MEASURES = ("committed_fen", "reserved_fen", "paid_fen")
MEASURE_LABELS = {"committed_fen": "承诺", "reserved_fen": "预留", "paid_fen": "已拨付"}
PALETTE = ["#2b5797", "#e3a21a", "#1e7145"]


def _figure(x_range: Any, y_label: str, height: int = 300, top: float | None = None) -> Any:
    chart = figure(
        x_range=x_range,
        y_range=Range1d(start=0, end=top) if top is not None else DataRange1d(start=0),
        height=height,
        sizing_mode="stretch_width",
        toolbar_location=None,
        tools="",
        y_axis_label=y_label,
    )
    chart.xgrid.grid_line_color = None
    chart.outline_line_color = None
    for axis in (chart.xaxis, chart.yaxis):
        axis.axis_label_text_font = FONT
        axis.major_label_text_font = FONT
        axis.axis_label_text_font_style = "normal"
    chart.xaxis.major_label_orientation = 0.6 if _many(x_range) else 0
    return chart


def _many(x_range: Any) -> bool:
    return isinstance(x_range, FactorRange) and len(x_range.factors) > 12


def money_by(rows: Sequence[dict[str, Any]]) -> StandaloneEmbedJson:
    """Committed, reserved and paid side by side per region, department or category."""
    factors = [(str(r["name"]), MEASURE_LABELS[m]) for r in rows for m in MEASURES]
    data = {
        "x": factors,
        "wan": [wan_number(int(r[m])) for r in rows for m in MEASURES],
        "amount": [format_fen(int(r[m])) for r in rows for m in MEASURES],
        "measure": [MEASURE_LABELS[m] for _ in rows for m in MEASURES],
        "cases": [int(r["cases"]) for r in rows for _ in MEASURES],
    }
    chart = _figure(FactorRange(factors=factors), "万元")
    chart.vbar(
        x="x",
        top="wan",
        width=0.9,
        source=ColumnDataSource(data),
        line_color=None,
        fill_color=factor_cmap(
            "x", palette=PALETTE, factors=list(MEASURE_LABELS.values()), start=1, end=2
        ),
    )
    chart.xaxis.group_text_font = FONT
    chart.add_tools(
        HoverTool(
            tooltips=[("", "@x"), ("金额", "@amount"), ("案件", "@cases")], attachment="above"
        )
    )
    return json_item(chart)


def paid_by_month(rows: Sequence[dict[str, Any]]) -> StandaloneEmbedJson:
    months = [str(r["key"]) for r in rows]
    data = {
        "month": months,
        "wan": [wan_number(int(r["paid_fen"])) for r in rows],
        "amount": [format_fen(int(r["paid_fen"])) for r in rows],
        "cases": [int(r["cases"]) for r in rows],
    }
    source = ColumnDataSource(data)
    chart = _figure(FactorRange(factors=months), "万元")
    chart.vbar(x="month", top="wan", width=0.7, source=source, color=PALETTE[2])
    chart.line(x="month", y="wan", source=source, color=PALETTE[0], line_width=2)
    chart.add_tools(
        HoverTool(tooltips=[("月份", "@month"), ("到账", "@amount"), ("案件", "@cases")])
    )
    return json_item(chart)


def speed_by(
    rows: Sequence[dict[str, Any]], traditional_days: int, target_days: float
) -> StandaloneEmbedJson:
    """Median and 90th percentile working days per category, against the traditional
    flow and the reform's goal."""
    names = [str(r["name"]) for r in rows]
    factors = [(n, k) for n in names for k in ("中位数", "90分位")]
    days = [float(r[k] or 0) for r in rows for k in ("median_days", "p90_days")]
    data = {
        "x": factors,
        "days": days,
        "cases": [int(r["paid_cases"]) for r in rows for _ in (0, 1)],
    }
    chart = _figure(
        FactorRange(factors=factors), "工作日", top=max([traditional_days, *days]) * 1.1
    )
    chart.vbar(
        x="x",
        top="days",
        width=0.85,
        source=ColumnDataSource(data),
        line_color=None,
        fill_color=factor_cmap(
            "x", palette=PALETTE[:2], factors=["中位数", "90分位"], start=1, end=2
        ),
    )
    chart.xaxis.group_text_font = FONT
    for line, color in ((traditional_days, "#b91d47"), (target_days, PALETTE[2])):
        chart.add_layout(
            Span(
                location=line, dimension="width", line_color=color, line_dash="dashed", line_width=2
            )
        )
    chart.add_tools(
        HoverTool(tooltips=[("", "@x"), ("工作日", "@days{0.0}"), ("已兑付案件", "@cases")])
    )
    return json_item(chart)
