"""Commitment cases (承诺类): admission with a signed letter, settlement, and the
recovery orders that bring back what was prepaid beyond the final amount. Callers use
the package: `from domain import commitment`."""
