"""The drafting extractor on sentences written the way subsidy policies write them:
which side of a threshold qualifies, money units, amount rules, and what it must leave to
a person. (bench/extraction.py measures it on labelled real articles.)"""

from __future__ import annotations

from typing import Any

import pytest

from domain.policy.extraction import amount_of, draft_items, read_text
from models.policy import Category
from models.policy_feed import Article

HUZHOU = {"湖州市": "330500", "吴兴区": "330502", "南浔区": "330503", "南太湖新区": "NTH"}


def conditions(text: str) -> list[dict[str, Any]]:
    return [p.rule for p in read_text(text, HUZHOU).conditions]


def amount(text: str) -> dict[str, Any] | None:
    found = amount_of(text)
    return None if found is None else found[0].rule


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (
            "年营业收入2000万元以上的企业",
            {"fact": "revenue_fen", "op": "gte", "value": 2_000_000_000},
        ),
        ("主营业务收入超过1亿元", {"fact": "revenue_fen", "op": "gt", "value": 10_000_000_000}),
        ("年纳税额不低于五百万元", {"fact": "tax_paid_fen", "op": "gte", "value": 500_000_000}),
        ("研发费用达到300万元", {"fact": "rd_expense_fen", "op": "gte", "value": 300_000_000}),
        (
            "设备投资额500万元（含）以上",
            {"fact": "renovation_investment_fen", "op": "gte", "value": 500_000_000},
        ),
        ("社保参保人数不少于50人", {"fact": "social_security_headcount", "op": "gte", "value": 50}),
        ("职工人数30人以下", {"fact": "social_security_headcount", "op": "lte", "value": 30}),
        ("年节能量1000吨标准煤以上", {"fact": "energy_saved_tce", "op": "gte", "value": 1000}),
        ("亩均效益综合评价为A类或B类", {"fact": "mu_grade", "op": "in", "value": ["A", "B"]}),
        ("亩均效益评价B类及以上", {"fact": "mu_grade", "op": "in", "value": ["A", "B"]}),
        ("公共信用评价等级为B级及以上", {"fact": "credit_rating", "op": "in", "value": ["A", "B"]}),
        (
            "环境信用评价为绿色或蓝色",
            {"fact": "env_credit_colour", "op": "in", "value": ["blue", "green"]},
        ),
        ("未列入严重失信主体名单", {"fact": "blacklisted", "op": "eq", "value": False}),
        (
            "新认定为国家级专精特新“小巨人”企业",
            {"fact": "specialised_level", "op": "eq", "value": "national"},
        ),
        ("首次获评省级绿色工厂", {"fact": "green_factory_level", "op": "eq", "value": "province"}),
        (
            "2025年1月1日以后新注册的企业",
            {"fact": "established_on", "op": "gte", "value": "2025-01-01"},
        ),
        ("对注册在吴兴区的企业", {"fact": "region_code", "op": "in", "value": ["330502"]}),
        (
            "對年營業收入2000萬元以上的企業",
            {"fact": "revenue_fen", "op": "gte", "value": 2_000_000_000},
        ),
    ],
)
def test_a_condition_is_read_with_its_side_and_unit(text: str, rule: dict[str, Any]) -> None:
    assert rule in conditions(text)


def test_a_band_is_read_as_both_its_sides() -> None:
    found = conditions("上一年度营业收入1亿元（含）—5亿元的软件企业")
    assert {"fact": "revenue_fen", "op": "gte", "value": 10_000_000_000} in found
    assert {"fact": "revenue_fen", "op": "lt", "value": 50_000_000_000} in found
    assert {"fact": "industry_code", "op": "prefix", "value": ["I65"]} in found
    assert len([c for c in found if c["fact"] == "revenue_fen"]) == 2


def test_what_only_names_a_figure_or_a_kind_of_firm_is_no_condition() -> None:
    assert conditions("中小微企业按不超过60%返还") == []  # who gets how much, not who qualifies
    assert conditions("营业收入增长较快") == []  # no number
    assert conditions("出口额1000万美元以上") == []  # dollars: for a person
    assert conditions("给予一次性奖励50万元") == []  # the amount paid, not a threshold


def test_two_industries_named_as_alternatives_widen_one_condition() -> None:
    text = "支持对象为规模以上工业企业和软件和信息技术服务业企业。"
    industries = [c for c in conditions(text) if c["fact"] == "industry_code"]
    assert industries == [
        {"fact": "industry_code", "op": "prefix", "value": ["B", "C", "D", "I65"]}
    ]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("给予一次性奖励50万元", {"kind": "fixed", "amount_fen": 50_000_000}),
        (
            "按设备投资额的8%给予补助，单个项目最高不超过500万元",
            {
                "kind": "rate",
                "fact": "renovation_investment_fen",
                "rate": "0.08",
                "cap_fen": 500_000_000,
            },
        ),
        (
            "按研发费用的10%给予补助，最低10万元，最高200万元",
            {
                "kind": "rate",
                "fact": "rd_expense_fen",
                "rate": "0.1",
                "cap_fen": 200_000_000,
                "floor_fen": 10_000_000,
            },
        ),
        (
            "按每吨标准煤300元给予奖励，最高不超过100万元",
            {"kind": "rate", "fact": "energy_saved_tce", "rate": "30000", "cap_fen": 100_000_000},
        ),
        (
            "按每节约一吨标准煤给予奖励300元，封顶150万元",
            {"kind": "rate", "fact": "energy_saved_tce", "rate": "30000", "cap_fen": 150_000_000},
        ),
        (
            "年营业收入首次突破1亿元、5亿元、10亿元的，分别给予20万、50万、100万元奖励",
            {
                "kind": "tiers",
                "fact": "revenue_fen",
                "tiers": [
                    {"at_least": 10_000_000_000, "amount_fen": 20_000_000},
                    {"at_least": 50_000_000_000, "amount_fen": 50_000_000},
                    {"at_least": 100_000_000_000, "amount_fen": 100_000_000},
                ],
            },
        ),
    ],
)
def test_an_amount_rule_is_read(text: str, rule: dict[str, Any]) -> None:
    assert amount(text) == rule


@pytest.mark.parametrize(
    "text",
    [
        "分别给予100万元、30万元、20万元奖励",  # one amount per kind of firm
        "每家给予最高20万元奖励",  # a cap with no rule under it
        "一次性给予每千瓦1000元的补助",  # a rate of a figure the platform does not keep
        "过户土地面积3亩至10亩奖励20万元、30亩以上的奖励80万元",  # by area
    ],
)
def test_an_amount_no_rule_states_is_left_to_a_person(text: str) -> None:
    assert amount(text) is None
    assert read_text(text, HUZHOU).amount_note == text


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("对新认定的企业给予一次性奖励20万元", "one_off"),
        ("按季度给予以下支持：每增长1000万元给予1万元", "quarterly"),
        ("对上年度营业收入2000万元以上的企业按研发费用的10%给予补助", "annual"),
    ],
)
def test_a_drafts_period_scheme_follows_the_text(text: str, scheme: str) -> None:
    (draft,) = draft_items("通知", [Article(number="第一条", text=text)], HUZHOU)
    assert draft.period_scheme == scheme


def test_a_manual_condition_quotes_who_qualifies_not_the_payment_or_the_moneys_use() -> None:
    paying = read_text("自愿开展清洁生产审核并通过验收的中小企业，给予一次性奖励15万元。", HUZHOU)
    assert [m.rule["manual"] for m in paying.manual] == ["自愿开展清洁生产审核并通过验收的中小企业"]
    use = read_text("奖补资金主要用于企业研发投入，不得用于偿还债务。", HUZHOU)
    assert use.manual == []


def test_a_grade_that_is_left_out_is_read_as_left_out() -> None:
    text = "亩均效益综合评价为D类的企业，不得享受本政策。"
    assert conditions(text) == [{"fact": "mu_grade", "op": "not_in", "value": ["D"]}]


def test_what_a_text_leaves_out_or_adjusts_is_no_requirement() -> None:
    where = conditions("本政策适用于注册地在吴兴区（不含南太湖新区托管区域）的工业企业。")
    assert {"fact": "region_code", "op": "in", "value": ["330502"]} in where
    adjusted = conditions("上年度亩均效益综合评价为C类的，补助比例下调2个百分点。")
    assert [c for c in adjusted if c["fact"] == "mu_grade"] == []


def test_the_articles_a_document_names_pay_the_way_it_says() -> None:
    articles = [
        Article(number="第四条", text="对新认定的企业，给予一次性奖励20万元。"),
        Article(number="第五条", text="对设备投资额500万元以上的项目，给予一次性奖励30万元。"),
        Article(number="第八条", text="第四条实行“免申即享”；第五条实行承诺制，先行兑付。"),
    ]
    drafts = draft_items("通知", articles, HUZHOU)
    assert [(d.article, d.category) for d in drafts] == [
        ("第四条", Category.RECOGNITION),
        ("第五条", Category.COMMITMENT),
    ]


def test_what_an_article_asks_of_all_its_payments_joins_each_and_is_no_payment() -> None:
    article = Article(
        number="第五条",
        text=(
            "对年营业收入首次突破10亿元、50亿元的企业，分别给予50万元、100万元奖励；"
            "对首次入选500强的企业，给予一次性奖励200万元。"
            "享受本条奖励的企业上年度实缴税金应不低于1000万元。"
        ),
    )
    drafts = draft_items("通知", [article], HUZHOU)
    assert [d.article for d in drafts] == ["第五条（1）", "第五条（2）"]
    tax = {"fact": "tax_paid_fen", "op": "gte", "value": 1_000_000_000}
    assert all(tax in [c.rule for c in d.conditions] for d in drafts)


def test_who_a_payment_is_for_is_kept_when_no_figure_says_it() -> None:
    reading = read_text("对首次入选“亩均效益领跑者”前20名的企业，每家给予奖励20万元。", HUZHOU)
    assert reading.amount is not None and reading.amount.rule["amount_fen"] == 20_000_000
    assert [m.rule["manual"] for m in reading.manual] == ["首次入选“亩均效益领跑者”前20名的企业"]


def test_an_amendment_proposes_no_item_and_an_articles_own_way_holds_for_its_parts() -> None:
    amendment = [
        Article(
            number="一、",
            text="将第五条中的“按设备投资额的8%给予补助”修改为“按设备投资额的10%给予补助”。",
        )
    ]
    assert draft_items("关于修改《办法》的通知", amendment, HUZHOU) == []
    article = Article(
        number="四、",
        text="对评价为A类的企业，每家给予奖励10万元；连续三年评价为A类的，奖励提高至20万元。本条实行“免申即享”。",
    )
    drafts = draft_items("通知", [article], HUZHOU)
    assert len(drafts) == 2 and {d.category for d in drafts} == {Category.RECOGNITION}
    other = Article(number="七、", text="除实行“免申即享”的条款外，其余条款实行申报制。")
    paying = Article(number="二、", text="对设备投资额500万元以上的项目，给予一次性奖励20万元。")
    (draft,) = draft_items("通知", [paying, other], HUZHOU)
    assert draft.category is Category.APPLICATION


def test_a_document_becomes_one_draft_per_paying_part_with_its_common_conditions() -> None:
    articles = [
        Article(
            number="第三条",
            text="申报企业应同时符合以下条件：公共信用评价等级为B级及以上；未列入严重失信主体名单；近三年未发生重大安全生产事故。",
        ),
        Article(
            number="第四条",
            text="支持技术改造。（一）设备投资额500万元及以上的，按设备投资额的8%给予补助，最高不超过500万元；（二）设备投资额5000万元以上的，按设备投资额的12%给予奖励，最高不超过3000万元。",
        ),
        Article(
            number="第五条",
            text="支持争先进位。对首次入选领跑者的企业，给予一次性奖励20万元。本条实行“免申即享”。",
        ),
        Article(number="第六条", text="本办法自发布之日起施行。"),
    ]
    drafts = draft_items("关于印发《测试办法》的通知", articles, HUZHOU)
    assert [d.article for d in drafts] == ["第四条（一）", "第四条（二）", "第五条"]
    first, second, third = drafts
    assert first.title == "支持技术改造" and third.title == "支持争先进位"
    common = {"fact": "credit_rating", "op": "in", "value": ["A", "B"]}
    assert all(common in [c.rule for c in d.conditions] for d in drafts)
    assert {"fact": "renovation_investment_fen", "op": "gte", "value": 500_000_000} in [
        c.rule for c in first.conditions
    ]
    assert {"fact": "renovation_investment_fen", "op": "gte", "value": 5_000_000_000} not in [
        c.rule for c in first.conditions
    ]
    assert second.amount is not None and second.amount.rule["rate"] == "0.12"
    assert [m.rule["manual"] for m in first.manual] == ["近三年未发生重大安全生产事故"]
    assert first.category is Category.APPLICATION and third.category is Category.RECOGNITION
    for draft in drafts:
        for proposed in draft.conditions:
            assert 0 < proposed.confidence <= 1 and proposed.quote
