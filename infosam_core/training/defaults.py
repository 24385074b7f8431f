"""The product's distiller defaults per model: what ``infosam train`` and the app's "Adapt to my data" use.

The library's defaults (:class:`~infosam_core.distill.infosam.InfosamConfig`, experiment plans) stay the
paper's exact formula. The two places a user adapts a model without choosing take, for the model in use, the
distiller measured best (:data:`RECOMMENDED_DISTILLER`; InfoSAM where nothing was measured against it) and that
distiller's options measured best (:data:`RECOMMENDED_DISTILL_OPTIONS`); what the user gives always wins
(``--distill infosam``, ``--distill-option center=false`` keeps the paper's formula).

The bundled tiny model's default is plain PEFT (no distillation). At the issue's protocol (10 epochs x batch 4,
3 seeds, box prompts; ``experiments/infosam_default_check.toml``, docs/results/infosam_default_check) no
InfoSAM setting was at or above plain Adapter at every seed: paired IoU x 100 against Adapter, centred
relations -0.10 / -0.34 / +0.06 on nuclei and -0.07 / -0.05 / +0.04 on CamVid road (70 / 30), the paper's
formula -1.17 / -2.99 / +0.01 and -0.37 / -0.21 / -0.86. So InfoSAM costs a teacher pass per step and gives
nothing measurable on this model; chosen anyway, it runs centred (the least harmful). A teacher that knows the task
(``TrainConfig.teacher_ema = 0.9``, a moving average of the student) changed these paired gains by at most 0.35 IoU
points (centred -0.10 / -0.35 / +0.06 and -0.09 / -0.04 / +0.01), and the reason is in L_d itself: centred relation
vectors of different images are near-orthogonal, so L_d sits at its floor with a gradient of a few per cent of the
segmentation loss's, while the paper's vectors give a gradient up to twice the segmentation loss's that decorrelates
the student rather than pulling it towards the teacher (docs/results/README.md, "What L_d's gradient does"). A term
that does pull towards the teacher (InfoSAM's ``l_d = "gram_match"``) was below Adapter at every seed (nuclei mean
-9.14, CamVid road -2.47; with the mean teacher -6.99 and -1.93).

Evidence (docs/results/README.md, "The InfoSAM default"): on the bundled tiny SAM the paper's relation
vectors collapse (the student's mask token drifts, its relation vectors become one constant vector, L_d ~ 0)
and InfoSAM with the paper's formula fell below plain Adapter at some seeds; centred relation vectors
(``center = true``) keep L_d informative and stayed within 0.2 IoU of plain Adapter at every seed
(nuclei +0.13 / +0.13 / +0.20, CamVid road +0.05 / +0.07 / -0.13: level, not a gain), where the paper's
formula ranged from -2.57 to +3.35. Models without an entry (SAM ViT-B/L/H, MobileSAM, SAM 2) keep the
paper's formula, the setting the paper measured on ViT-B.
"""

from __future__ import annotations

from typing import Any

#: model type -> the distiller measured best for it (a model absent here: :data:`DEFAULT_DISTILLER`)
RECOMMENDED_DISTILLER: dict[str, str] = {"tiny": "none"}
#: what a model without a measured default gets: InfoSAM, the paper's method (measured on SAM ViT-B there)
DEFAULT_DISTILLER = "infosam"

RECOMMENDED_DISTILL_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    # model type -> distiller -> options
    "tiny": {"infosam": {"center": True}},
}


def recommended_distiller(model_type: str | None) -> str:
    """The distiller the product adapts ``model_type`` with when the user chose none (``none``: plain PEFT)."""
    return RECOMMENDED_DISTILLER.get(model_type or "", DEFAULT_DISTILLER)


def describe_recommended_distiller(model_type: str | None) -> str:
    """One line for logs when the model's default distiller is not InfoSAM (empty otherwise)."""
    name = recommended_distiller(model_type)
    if name == DEFAULT_DISTILLER:
        return ""
    return (
        f"distillation: {name}, the default for the {model_type} model (InfoSAM measured no better than plain PEFT "
        "on it: docs/results, 'The InfoSAM default'); --distill infosam uses it"
    )


def recommended_distill_options(model_type: str | None, distill: str) -> dict[str, Any]:
    """The options measured best for ``distill`` on ``model_type`` (empty: the distiller's own defaults)."""
    return dict(RECOMMENDED_DISTILL_OPTIONS.get(model_type or "", {}).get(distill, {}))


def with_recommended_options(model_type: str | None, distill: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` completed with the recommended options for the model; what the user gave wins."""
    return {**recommended_distill_options(model_type, distill), **given}


def describe_recommended(model_type: str | None, distill: str) -> str:
    """One line for logs: which defaults were added (empty when none)."""
    options = recommended_distill_options(model_type, distill)
    if not options:
        return ""
    listed = ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())
    return f"{distill} defaults for the {model_type} model: {listed} (override with --distill-option)"
