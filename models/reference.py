"""Regions, departments and users: who acts where."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class RegionLevel(enum.StrEnum):
    CITY = "city"
    DISTRICT = "district"
    COUNTY = "county"
    ZONE = "zone"  # functional zone (南太湖新区...), a unit of its own


class Region(SQLModel, table=True):
    code: str = Field(primary_key=True, max_length=16)
    name: str = Field(max_length=64)
    level: RegionLevel = Field(sa_type=sa.String(16))
    parent_code: str | None = Field(default=None, foreign_key="region.code", max_length=16)


class DepartmentKind(enum.StrEnum):
    POLICY = "policy"
    FINANCE = "finance"


class Department(SQLModel, table=True):
    code: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=64)
    kind: DepartmentKind = Field(sa_type=sa.String(16))
    region_code: str = Field(foreign_key="region.code", max_length=16, index=True)
    # How the public reaches the unit (科室、电话), shown in the public catalogue.
    contact: str | None = Field(default=None, max_length=128)


class Role(enum.StrEnum):
    ENTERPRISE = "enterprise"
    DEPARTMENT_CASEWORKER = "department_caseworker"
    DEPARTMENT_HEAD = "department_head"
    FINANCE_CASEWORKER = "finance_caseworker"
    FINANCE_HEAD = "finance_head"  # waives recovery (核销); otherwise reads like finance
    AUDITOR = "auditor"
    ADMIN = "admin"
    OPS = "ops"  # operations staff: the Temporal UI through the codec server; no case data


class User(SQLModel, table=True):
    name: str = Field(primary_key=True, max_length=64)
    display_name: str = Field(max_length=64)
    role: Role = Field(sa_type=sa.String(32))
    department_code: str | None = Field(default=None, foreign_key="department.code", max_length=32)
    region_code: str | None = Field(default=None, foreign_key="region.code", max_length=16)
    enterprise_uscc: str | None = Field(default=None, foreign_key="enterprise.uscc", max_length=18)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Actor(BaseModel):
    """The authenticated user as it travels into services and workflows (never an ORM row)."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role
    department_code: str | None = None
    region_code: str | None = None
    enterprise_uscc: str | None = None

    @classmethod
    def of(cls, user: User) -> Actor:
        return cls(
            name=user.name,
            role=Role(user.role),
            department_code=user.department_code,
            region_code=user.region_code,
            enterprise_uscc=user.enterprise_uscc,
        )


class UserPublic(SQLModel):
    name: str
    display_name: str
    role: Role
    department_code: str | None
    region_code: str | None
    enterprise_uscc: str | None


class RegionPublic(SQLModel):
    code: str
    name: str
    level: RegionLevel
    parent_code: str | None


class DepartmentPublic(SQLModel):
    code: str
    name: str
    kind: DepartmentKind
    region_code: str
