"""Example workers for the loan-approval saga: credit check, risk assessment, approval, and
the compensation of each. Results follow from the application, never at random."""

from __future__ import annotations

import hashlib
from typing import Any

from agents.failures import action_data, instance_of
from agents.worker import ActionRefused, Handler, Result
from choreo.envelope import Event


def _digest(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _application(data: dict[str, Any]) -> dict[str, Any]:
    application = data.get("application")
    if not isinstance(application, dict) or not application.get("applicant_id"):
        raise ActionRefused("the action's data has no application with an applicant_id")
    return application


async def check_credit(action: Event) -> list[Result]:
    data = action_data(action)
    application = _application(data)
    applicant = application["applicant_id"]
    score = application.get("credit_score")
    if not isinstance(score, int):
        score = 300 + int(_digest("score", applicant)[:8], 16) % 551  # 300..850
    check_id = "chk-" + _digest("check", instance_of(action), applicant)[:10]
    return [Result("credit_checked", {"check_id": check_id, "applicant_id": applicant,
                                      "score": score, "bureau": "example-bureau"})]


async def release_credit_check(action: Event) -> list[Result]:
    data = action_data(action)
    return [Result("credit_check_released", {"check_id": data.get("check_id")})]


async def assess_risk(action: Event) -> list[Result]:
    data = action_data(action)
    application = _application(data)
    score = (data.get("credit") or {}).get("score", 0)
    amount = float(application.get("amount", 0))
    income = float(application.get("annual_income", 0)) or 1.0
    ratio = amount / income
    level = ("low" if score >= 700 and ratio <= 3 else
             "medium" if score >= 600 and ratio <= 5 else "high")
    assessment_id = "risk-" + _digest("risk", instance_of(action))[:10]
    return [Result("risk_assessed", {"assessment_id": assessment_id, "risk_level": level,
                                     "score": score, "debt_to_income": round(ratio, 2)})]


async def cancel_assessment(action: Event) -> list[Result]:
    data = action_data(action)
    return [Result("risk_assessment_cancelled", {"assessment_id": data.get("assessment_id")})]


async def approve_loan(action: Event) -> list[Result]:
    data = action_data(action)
    application = _application(data)
    level = (data.get("risk") or {}).get("risk_level", "high")
    approved = level != "high"
    rate = {"low": 4.5, "medium": 7.9}.get(level)
    loan_id = "loan-" + _digest("loan", instance_of(action))[:10]
    return [Result("loan_decided", {"loan_id": loan_id, "approved": approved,
                                    "amount": application.get("amount"),
                                    "interest_rate": rate, "risk_level": level})]


async def cancel_loan(action: Event) -> list[Result]:
    data = action_data(action)
    return [Result("loan_cancelled", {"loan_id": data.get("loan_id")})]


HANDLERS: dict[str, dict[str, Handler]] = {
    "credit_bureau": {"check_credit": check_credit,
                      "release_credit_check": release_credit_check},
    "risk_assessment": {"assess_risk": assess_risk, "cancel_assessment": cancel_assessment},
    "loan_processing": {"approve_loan": approve_loan, "cancel_loan": cancel_loan},
}
