"""The public policy catalogue (事项清单向社会公开): what anyone may read without signing in.

Only what a published item version states publicly: its conditions and amount rule in
plain Chinese, its issuing document, the unit and time limit of every stage, and whom to
ask. Never a draft, a quota, a case or anything about a firm.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from pydantic import BaseModel, Field

from models.eligibility import ConditionResult, Verdict
from models.facts import FactType
from models.period import PeriodScheme
from models.policy import Category, Level, Stage

HOW_TO_GET: dict[Category, str] = {
    Category.RECOGNITION: (
        "免申即享：平台根据数据自动识别符合条件的企业，企业无需申报，只需确认收款账户"
    ),
    Category.COMMITMENT: (
        "承诺制：企业签署承诺书，经联合审核后预拨资金，项目完成后清算，未达承诺的追回"
    ),
    Category.APPLICATION: "申报制：企业随时在线申报，各环节限时审核，审核通过后直接拨付",
}


PERIOD_NAMES: dict[PeriodScheme, str] = {
    PeriodScheme.ANNUAL: "按年度：每家企业每年最多享受一次",
    PeriodScheme.QUARTERLY: "按季度：每家企业每季度最多享受一次",
    PeriodScheme.MONTHLY: "按月：每家企业每月最多享受一次",
    PeriodScheme.ONE_OFF: "一次性：每家企业仅可享受一次",
}


class LineKind(enum.StrEnum):
    CONDITION = "condition"  # a machine-checked condition
    MANUAL = "manual"  # checked by the department from the firm's materials
    GROUP = "group"  # introduces the lines under it (任一项, 并非)


class ConditionLine(BaseModel):
    """One line of an item's conditions in plain Chinese; `depth` indents it under the
    group line before it."""

    depth: int = Field(ge=0)
    kind: LineKind
    text: str


class PublicDocument(BaseModel):
    doc_number: str
    title: str
    issuer: str
    level: Level
    issued_on: date


class PublicStage(BaseModel):
    stage: Stage
    stage_name: str
    unit_code: str
    unit_name: str
    working_days: int


class PublicContact(BaseModel):
    unit_name: str
    contact: str | None = Field(description="联系方式（科室、电话）；未登记时为空")


class FactInput(BaseModel):
    """A figure the policy calculator asks for: the query parameter `name`."""

    name: str
    label: str
    type: FactType
    unit: str
    choices: list[str] | None = None


class PublicPolicySummary(BaseModel):
    code: str
    title: str
    summary: str
    category: Category
    how_to_get: str
    level: Level = Field(description="发文层级：国家、省、市、区县")
    document: PublicDocument
    department_code: str
    department_name: str
    region_code: str
    region_name: str
    period_scheme: PeriodScheme
    period_name: str = Field(description="兑付周期（中文）")
    valid_from: date
    valid_to: date
    url: str = Field(description="该事项的公开页面（稳定地址）")


class PublicPolicy(PublicPolicySummary):
    version: int
    published_at: datetime | None
    conditions: list[ConditionLine]
    amount: str = Field(description="金额标准（中文）")
    stages: list[PublicStage]
    contact: PublicContact
    inputs: list[FactInput] = Field(description="政策计算器需要填写的数据")


class PublicOption(BaseModel):
    code: str
    name: str


class CatalogueFacets(BaseModel):
    """What the catalogue's search form offers."""

    regions: list[PublicOption]
    departments: list[PublicOption]
    categories: list[PublicOption]
    levels: list[PublicOption]


class PolicyCheck(BaseModel):
    """The policy calculator's answer for figures a visitor typed in; nothing is stored."""

    code: str
    version: int
    as_of: date
    in_force: bool = Field(description="该政策在 as_of 当天是否在有效期内；不在则不符合")
    verdict: Verdict
    conditions: list[ConditionResult]
    amount_fen: int | None = Field(description="预计金额（分）；不符合或缺少计算所需数据时为空")
    amount_explanation: str
    missing: list[FactInput] = Field(description="尚未填写、填写后才能得出结论的数据")
