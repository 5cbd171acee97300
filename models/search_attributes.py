"""Custom search attributes: they make cases findable in the Temporal UI.

Never put names, ID numbers, bank accounts or amounts here: Temporal stores them
unencrypted. temporal-dev.yaml registers the same names on the dev server.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

KIND = SearchAttributeKey.for_keyword("ZhidaKind")
CATEGORY = SearchAttributeKey.for_keyword("ZhidaCategory")
ITEM_CODE = SearchAttributeKey.for_keyword("ZhidaItemCode")
REGION = SearchAttributeKey.for_keyword("ZhidaRegion")
DEPARTMENT = SearchAttributeKey.for_keyword("ZhidaDepartment")
STAGE = SearchAttributeKey.for_keyword("ZhidaStage")
OVERDUE = SearchAttributeKey.for_bool("ZhidaOverdue")
# A recognition batch, on the batch and on each of its cases (a batch id names an item,
# a period and a number: nothing personal).
BATCH = SearchAttributeKey.for_keyword("ZhidaBatch")

ALL = (KIND, CATEGORY, ITEM_CODE, REGION, DEPARTMENT, STAGE, OVERDUE, BATCH)
