"""Example workers for the medical-diagnosis workflow: X-ray and MRI analyses, a diagnosis
from both, and a treatment plan. Deterministic stand-ins: findings follow from the input."""

from __future__ import annotations

from typing import Any

from agents.failures import action_data
from agents.worker import ActionRefused, Handler, Result
from choreo.envelope import Event


def _findings(image: Any, modality: str) -> list[str]:
    if not isinstance(image, dict):
        raise ActionRefused(f"no {modality} image in the action's data")
    return sorted(str(f) for f in image.get("marks", []))


async def analyze_xray(action: Event) -> list[Result]:
    findings = _findings(action_data(action).get("image"), "X-ray")
    return [Result("xray_analyzed", {"modality": "xray", "findings": findings,
                                     "confidence": 0.9 if findings else 0.97})]


async def analyze_mri(action: Event) -> list[Result]:
    findings = _findings(action_data(action).get("image"), "MRI")
    return [Result("mri_analyzed", {"modality": "mri", "findings": findings,
                                    "confidence": 0.92 if findings else 0.98})]


async def generate_diagnosis(action: Event) -> list[Result]:
    data = action_data(action)
    xray = data.get("xray_results") or {}
    mri = data.get("mri_results") or {}
    both = sorted(set(xray.get("findings", [])) & set(mri.get("findings", [])))
    either = sorted(set(xray.get("findings", [])) | set(mri.get("findings", [])))
    condition = both[0] if both else (either[0] if either else "no abnormality")
    confidence = round(min(xray.get("confidence", 0), mri.get("confidence", 0))
                       * (1.0 if both or not either else 0.7), 3)
    return [Result("diagnosis_generated", {"condition": condition, "confidence": confidence,
                                           "based_on": ["xray", "mri"], "findings": either})]


async def create_treatment_plan(action: Event) -> list[Result]:
    diagnosis = action_data(action).get("diagnosis") or {}
    condition = diagnosis.get("condition", "no abnormality")
    if condition == "no abnormality":
        plan, follow_up = ["no treatment needed"], 365
    else:
        plan, follow_up = [f"refer to specialist for {condition}", "follow-up imaging"], 30
    return [Result("treatment_plan_created", {"condition": condition, "plan": plan,
                                              "follow_up_days": follow_up})]


HANDLERS: dict[str, dict[str, Handler]] = {
    "xray_analysis": {"analyze_xray": analyze_xray},
    "mri_analysis": {"analyze_mri": analyze_mri},
    "diagnostics": {"generate_diagnosis": generate_diagnosis},
    "treatment_planning": {"create_treatment_plan": create_treatment_plan},
}
