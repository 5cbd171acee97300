"""How well the drafting extractor reads real policy articles (domain/policy/extraction.py).

The labelled set, bench/data/extraction/articles.yaml, holds verbatim articles of real
published subsidy policies with the conditions and amount rule a careful reader takes
from each (kept apart from the simulator's documents, which the extractor was written
against). Articles are split by document into `dev` (looked at while improving the
extractor) and `test` (only ever scored): quote the test figures.

A condition counts as found when the extractor proposes the same fact, operator and
value (lists compared as sets); an amount rule is exact when every field is equal.
Manual conditions are not scored. Prints one line per split, then all articles:

    articles=… conditions=… precision=… recall=… amount_rules_exact=…
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain.policy.extraction import read_text
from seed.reference import REGIONS

ARTICLES = Path(__file__).parent / "data" / "extraction" / "articles.yaml"
HUZHOU = {name: code for code, name, _level, _parent in REGIONS}


def canonical(condition: dict[str, Any]) -> tuple[str, str, Any]:
    value = condition["value"]
    if isinstance(value, list) and condition["op"] in ("in", "not_in", "prefix"):
        value = tuple(sorted(str(v) for v in value))
    elif isinstance(value, list):
        value = tuple(value)
    else:
        value = str(value)
    return condition["fact"], condition["op"], value


def canonical_amount(rule: dict[str, Any] | None) -> Any:
    if rule is None:
        return None
    shown = {k: v for k, v in rule.items() if k not in ("quote",)}
    if "rate" in shown:
        shown["rate"] = Decimal(str(shown["rate"])).normalize()
    if "tiers" in shown:
        shown["tiers"] = tuple((t["at_least"], t["amount_fen"]) for t in shown["tiers"])
    return tuple(sorted(shown.items()))


@dataclass
class Score:
    articles: int = 0
    labelled: int = 0
    proposed: int = 0
    found: int = 0
    amounts: int = 0
    amounts_exact: int = 0
    amounts_wrong: int = 0  # proposed where the label says none, or a different one
    misses: list[str] = field(default_factory=list)

    def line(self) -> str:
        precision = self.found / self.proposed if self.proposed else 0.0
        recall = self.found / self.labelled if self.labelled else 0.0
        exact = self.amounts_exact / self.amounts if self.amounts else 0.0
        return (
            f"articles={self.articles} conditions={self.labelled} precision={precision:.2f} "
            f"recall={recall:.2f} amount_rules_exact={exact:.2f}"
        )


def score(articles: Iterable[dict[str, Any]], verbose: bool = False) -> Score:
    total = Score()
    for article in articles:
        reading = read_text(article["text"], HUZHOU)
        proposed = {canonical(c.rule) for c in reading.conditions if "fact" in c.rule}
        labelled = {canonical(c) for c in article.get("conditions") or []}
        total.articles += 1
        total.labelled += len(labelled)
        total.proposed += len(proposed)
        total.found += len(proposed & labelled)
        want = canonical_amount(article.get("amount"))
        got = canonical_amount(reading.amount.rule if reading.amount else None)
        if want is not None:
            total.amounts += 1
            total.amounts_exact += want == got
        if got is not None and got != want:
            total.amounts_wrong += 1
        if verbose and (proposed != labelled or want != got):
            total.misses.append(
                f"{article['id']}: extra {sorted(proposed - labelled)} missed "
                f"{sorted(labelled - proposed)} amount want {want} got {got}"
            )
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="print each article's misses")
    args = parser.parse_args()
    data = yaml.safe_load(ARTICLES.read_text("utf-8"))
    articles = data["articles"]
    documents = {str(a["source"].get("url")) for a in articles}
    print(f"labelled set: {ARTICLES.name}, {len(articles)} articles of {len(documents)} sources")
    for split in ("dev", "test"):
        result = score([a for a in articles if a["split"] == split], args.verbose)
        for miss in result.misses:
            print(f"  {miss}")
        print(
            f"split={split} {result.line()} amounts_labelled={result.amounts} "
            f"amounts_wrong={result.amounts_wrong}"
        )
    print(score(articles).line())


if __name__ == "__main__":
    main()
