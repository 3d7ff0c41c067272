"""Whether a training run's version is promoted in its project, with the numbers behind the decision.

It must not lose on the project's held-out images (DSB score at least the parent's minus
`promotion_tolerance`) and must not collapse on the base validation split (at least the parent's minus
the generous `promotion_base_tolerance`). Without held-out images the base split alone judges it,
with the strict tolerance. A run evaluated on nothing waits for an admin; `force_promote` promotes.
"""
from __future__ import annotations

METRIC = "dsb_score"

PROMOTED, REJECTED, AWAITING_ADMIN, FORCED = "promoted", "rejected", "awaiting_admin", "forced"


def _check(name: str, before: dict, after: dict, tolerance: float) -> dict:
    drop = before[METRIC] - after[METRIC]
    return {"on": name, "metric": METRIC, "before": round(before[METRIC], 4), "after": round(after[METRIC], 4),
            "images": after.get("images", 0), "tolerance": tolerance, "drop": round(drop, 4),
            "passed": drop <= tolerance}


def decide(held_out: dict, base: dict, settings, force: bool = False) -> dict:
    """`held_out` and `base`: {"before": parent's scores, "after": the new version's}, each {} when there was
    nothing to score. Returns the recorded decision: its rule, each check with its numbers, the outcome."""
    checks = []
    has_held_out = bool(held_out.get("before")) and bool(held_out.get("after"))
    has_base = bool(base.get("before")) and bool(base.get("after"))
    if has_held_out:
        checks.append(_check("held_out", held_out["before"], held_out["after"], settings.promotion_tolerance))
        if has_base:
            checks.append(_check("base_validation", base["before"], base["after"], settings.promotion_base_tolerance))
        rule = (f"held-out {METRIC} >= parent - {settings.promotion_tolerance} and base validation {METRIC} >= "
                f"parent - {settings.promotion_base_tolerance}" if has_base else
                f"held-out {METRIC} >= parent - {settings.promotion_tolerance} (no base validation split)")
    elif has_base:
        checks.append(_check("base_validation", base["before"], base["after"], settings.promotion_tolerance))
        rule = f"no held-out images: base validation {METRIC} >= parent - {settings.promotion_tolerance}"
    else:
        rule = "evaluated on nothing: an admin decides"
    passed = bool(checks) and all(check["passed"] for check in checks)
    if force:
        decision = FORCED
    elif not checks:
        decision = AWAITING_ADMIN
    else:
        decision = PROMOTED if passed else REJECTED
    return {"rule": rule, "checks": checks, "gate_passed": passed if checks else None, "decision": decision,
            "promote": decision in (PROMOTED, FORCED)}
