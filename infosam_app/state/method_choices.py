"""What the Adapt panel offers, read from the core's registries (Qt-free): the PEFT methods of
:data:`~infosam_core.peft.registry.PEFT_METHODS` in registry order (the paper's setup first) under their titles,
and the distillers of :data:`~infosam_core.distill.registry.DISTILLERS` (the recommended one first, then none,
then the rest as advanced choices). A method or distiller registered in the core appears here with no app
change."""

from __future__ import annotations

from dataclasses import dataclass

NO_DISTILLATION = "none"  # infosam_core.distill.registry.NO_DISTILLATION, without importing torch here


@dataclass(frozen=True)
class Choice:
    """One combo entry: ``text`` shown, ``name`` (the registry key) as its data, ``tooltip`` (the registry's
    one-line description)."""

    text: str
    name: str
    tooltip: str = ""


def method_choices() -> list[Choice]:
    """Every registered PEFT method, in registry order, shown by its title."""
    from infosam_core.peft.registry import PEFT_METHODS

    return [Choice(method.label, name, method.description) for name, method in PEFT_METHODS.items()]


def default_distiller(model_type: str | None = None) -> str:
    """The distiller the app adapts ``model_type`` with unless the user chooses: the one measured best for it
    (:func:`infosam_core.training.defaults.recommended_distiller`: none on the bundled tiny model), else the
    registry's recommended one (InfoSAM)."""
    from infosam_core.distill.registry import DISTILLERS, recommended_distiller
    from infosam_core.training.defaults import RECOMMENDED_DISTILLER

    measured = RECOMMENDED_DISTILLER.get(model_type or "")
    if measured is not None and (measured == NO_DISTILLATION or measured in DISTILLERS):
        return measured
    return recommended_distiller()


def distill_choices(model_type: str | None = None) -> list[Choice]:
    """The distillation combo, in a fixed order: the registry's recommended distiller (InfoSAM), none, then
    the other registered distillers as advanced choices (the paper's baselines), each with its one-line
    description; ``(recommended)`` marks :func:`default_distiller` for ``model_type``."""
    from infosam_core.distill.registry import DISTILLERS, recommended_distiller

    first = recommended_distiller()
    best = default_distiller(model_type)

    def marked(text: str, name: str) -> str:
        return f"{text} (recommended)" if name == best else text

    choices = []
    if first in DISTILLERS:
        spec = DISTILLERS[first]
        choices.append(Choice(marked(spec.label, first), first, spec.description))
    choices.append(
        Choice(marked("None (plain PEFT)", NO_DISTILLATION), NO_DISTILLATION, "the PEFT method alone, no teacher")
    )
    choices += [
        Choice(marked(f"Advanced: {name} \u2013 {spec.description}", name), name, spec.description)
        for name, spec in DISTILLERS.items()
        if name != first
    ]
    return choices


def distill_label(name: str) -> str:
    """' + InfoSAM', ' + vid', ... for messages and model labels (the distiller's title, else its name); ''
    without distillation."""
    from infosam_core.distill.registry import DISTILLERS

    if name == NO_DISTILLATION:
        return ""
    spec = DISTILLERS.get(name)
    return f" + {spec.label if spec is not None else name}"


def distill_term_names(name: str) -> tuple[str, ...]:
    """The loss terms the distiller ``name`` reports with its default options (for the loss plot)."""
    from infosam_core.distill.registry import DISTILLERS

    spec = DISTILLERS.get(name)
    return () if spec is None else tuple(spec.distiller_cls.term_names)
