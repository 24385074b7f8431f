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


def default_distiller() -> str:
    """The distiller the app starts with: the registry's recommended one (InfoSAM)."""
    from infosam_core.distill.registry import recommended_distiller

    return recommended_distiller()


def distill_choices() -> list[Choice]:
    """The distillation combo: the recommended distiller, none, then the other registered distillers as
    advanced choices (the paper's baselines), each with its one-line description."""
    from infosam_core.distill.registry import DISTILLERS

    default = default_distiller()
    choices = []
    if default in DISTILLERS:
        spec = DISTILLERS[default]
        choices.append(Choice(f"{spec.label} (recommended)", default, spec.description))
    choices.append(Choice("None (plain PEFT)", NO_DISTILLATION, "the PEFT method alone, no teacher"))
    choices += [
        Choice(f"Advanced: {name} \u2013 {spec.description}", name, spec.description)
        for name, spec in DISTILLERS.items()
        if name != default
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
