"""Huzhou's regions and departments, and the demo users of the embedded stack."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from models.reference import Department, DepartmentKind, Region, RegionLevel, Role, User

CITY = "330500"
# GB/T 2260 codes; the two functional zones named in the source have no code of
# their own there, so they get unit codes of ours under the city.
REGIONS: tuple[tuple[str, str, RegionLevel, str | None], ...] = (
    (CITY, "湖州市", RegionLevel.CITY, None),
    ("330502", "吴兴区", RegionLevel.DISTRICT, CITY),
    ("330503", "南浔区", RegionLevel.DISTRICT, CITY),
    ("330521", "德清县", RegionLevel.COUNTY, CITY),
    ("330522", "长兴县", RegionLevel.COUNTY, CITY),
    ("330523", "安吉县", RegionLevel.COUNTY, CITY),
    ("NTH", "南太湖新区", RegionLevel.ZONE, CITY),
    ("CHQ", "长合区", RegionLevel.ZONE, CITY),
)
# The county code a zone's firms carry in their credit codes.
ZONE_HOST = {"NTH": "330502", "CHQ": "330522"}

CITY_DEPARTMENTS = (
    ("JXJ", "经济和信息化局", "企业服务处 0572-2398601"),
    ("KJJ", "科学技术局", "高新技术处 0572-2398702"),
    ("SWJ", "商务局", "外贸发展处 0572-2398803"),
    ("RSJ", "人力资源和社会保障局", "就业促进处 0572-2398904"),
    ("FGW", "发展和改革委员会", "投资处 0572-2399005"),
    ("STHJ", "生态环境局", "综合处 0572-2399106"),
)
# The demo units' contacts (fictional numbers), by the region's last digits.
_DISTRICT_PHONE = "0572-26{:02d}{:03d}"


def departments() -> list[Department]:
    out = [
        Department(
            code=f"{CITY}-{code}",
            name=f"湖州市{name}",
            kind=DepartmentKind.POLICY,
            region_code=CITY,
            contact=contact,
        )
        for code, name, contact in CITY_DEPARTMENTS
    ]
    for number, (region, name, _level, _parent) in enumerate(REGIONS):
        out.append(
            Department(
                code=f"{region}-CZJ",
                name=f"{name}财政局",
                kind=DepartmentKind.FINANCE,
                region_code=region,
                contact=f"企业资金科 {_DISTRICT_PHONE.format(number, 101)}",
            )
        )
        if region != CITY:
            out.append(
                Department(
                    code=f"{region}-JXJ",
                    name=f"{name}经济和信息化局",
                    kind=DepartmentKind.POLICY,
                    region_code=region,
                    contact=f"企业服务科 {_DISTRICT_PHONE.format(number, 202)}",
                )
            )
    return out


DEMO_FIRM_USER = "qiye"


def demo_users(enterprise_uscc: str | None) -> list[User]:
    """The demo staff, and the sample firm's user when there is a firm to give it."""
    jxj, kjj, czj = f"{CITY}-JXJ", f"{CITY}-KJJ", f"{CITY}-CZJ"
    users = [
        User(name="admin", display_name="平台管理员", role=Role.ADMIN, region_code=CITY),
        User(
            name="jxj_staff",
            display_name="市经信局经办人",
            role=Role.DEPARTMENT_CASEWORKER,
            department_code=jxj,
            region_code=CITY,
        ),
        User(
            name="jxj_head",
            display_name="市经信局负责人",
            role=Role.DEPARTMENT_HEAD,
            department_code=jxj,
            region_code=CITY,
        ),
        User(
            name="kjj_staff",
            display_name="市科技局经办人",
            role=Role.DEPARTMENT_CASEWORKER,
            department_code=kjj,
            region_code=CITY,
        ),
        User(
            name="kjj_head",
            display_name="市科技局负责人",
            role=Role.DEPARTMENT_HEAD,
            department_code=kjj,
            region_code=CITY,
        ),
        User(
            name="czj_staff",
            display_name="市财政局经办人",
            role=Role.FINANCE_CASEWORKER,
            department_code=czj,
            region_code=CITY,
        ),
        User(
            name="czj_head",
            display_name="市财政局负责人",
            role=Role.FINANCE_HEAD,
            department_code=czj,
            region_code=CITY,
        ),
        User(
            name="wx_czj_staff",
            display_name="吴兴区财政局经办人",
            role=Role.FINANCE_CASEWORKER,
            department_code="330502-CZJ",
            region_code="330502",
        ),
        User(name="auditor", display_name="市审计局审计员", role=Role.AUDITOR, region_code=CITY),
        User(name="ops", display_name="平台运维人员", role=Role.OPS, region_code=CITY),
    ]
    if enterprise_uscc is not None:
        users.append(
            User(
                name=DEMO_FIRM_USER,
                display_name="示例企业经办人",
                role=Role.ENTERPRISE,
                enterprise_uscc=enterprise_uscc,
            )
        )
    return users


def demo_user_names() -> list[str]:
    """Every demo user's name, the firm's user last (the dev stack's banner lists them)."""
    return [user.name for user in demo_users(None)] + [DEMO_FIRM_USER]


async def ensure_reference_data(session: AsyncSession) -> None:
    """Insert missing regions and departments (idempotent)."""
    for code, name, level, parent in REGIONS:
        if await session.get(Region, code) is None:
            session.add(Region(code=code, name=name, level=level, parent_code=parent))
            await session.flush()
    for dept in departments():
        if await session.get(Department, dept.code) is None:
            session.add(dept)
    await session.flush()


async def ensure_users(session: AsyncSession, users: list[User]) -> None:
    for user in users:
        if await session.get(User, user.name) is None:
            session.add(user)
    await session.flush()
