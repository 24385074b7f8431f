"""InfoSAM (Zhang et al., ICML 2025, "Fine-Tuning SAM from an Information-Theoretic Perspective").

One relation module R, shared by teacher and student, maps (image embedding z_i, mask token z_m) to a
relation vector per sample. With Gram matrices across the batch and the matrix Renyi entropy of order 2
(:mod:`infosam_core.distill.renyi`):

* L_r = S(G_r^T) - S(G_i^T o G_m^T o G_r^T): compresses the teacher's relation; its inputs are detached,
  so its gradient reaches only the relation module;
* L_d = -S(G_r^T) - S(G_r^S) + S(G_r^T o G_r^S) = -I(R^T; R^S): trains the student (and R);
* total = alpha * L_r + beta * L_d (the paper: alpha = 1, beta = 0.5; the trainer adds lambda * total).

With several processes the Gram matrices are taken over the global batch (``DistillInputs.gather``).

``warmup_steps`` (not in the paper; default 0 = the paper): for the first N optimiser steps of a run
(``DistillInputs.step``) the student's embeddings and token enter L_d detached, so the relation module
(randomly initialised) learns from L_r and L_d while the student learns from the segmentation loss alone;
afterwards L_d reaches the student.

``center`` (not in the paper; default False = the paper): subtract each relation vector's mean over the
locations before normalising (``r = normalize(s - mean(s))``), so a score offset shared by all locations
cannot dominate it. Measured on the tiny model (docs/results/README.md): after 16 adapter steps the
student's mask token has moved 65-83 % (relative norm), its scores carry an offset of about -67 against a
spread of about 4, and its relation vectors become near-constant (cosine 0.996 between images, the
teacher's 0.38): G_r^S is near rank one and L_d near zero. Centred, the relation vectors of different images are
near-orthogonal (teacher and student), so both Gram matrices are near the identity and L_d sits near its floor
-S(G_r^T) (-log2 B), where its gradient is small (docs/results/README.md, "What L_d's gradient does").

L_d's floor over the student is -S(G_r^T), reached by any student whose relation vectors are orthogonal across the
batch, whatever the teacher's; a student that copies the teacher's (correlated) vectors scores higher. So L_d
decorrelates the student's relation vectors; it does not pull them towards the teacher's
(``tests/test_renyi.py``).

``query`` (not in the paper; default ``"student"`` = the paper): whose mask token queries the student's
image embedding. ``"teacher"``: the student's relation vector is ``R(z_i^S, z_m^T)``, so L_d compares the
two embeddings through the same (teacher's) token and a drifting student token cannot collapse it; the
student's token then learns from the segmentation loss alone.

Normalising the token before the relation module is not an option: the module already applies LayerNorm
to the token (``RelationModule.norm_token``), which removes its scale and mean, so an extra normalisation
would change nothing; the drift that collapses the relation vectors is in the token's direction.

``l_d`` (not in the paper; default ``"mutual_information"`` = the paper): ``"gram_match"`` replaces L_d by
``||G_r^S - G_r^T||_F^2``, the squared distance between the student's and the teacher's relation Gram matrices,
a term whose minimum *is* the teacher's relations (L_d's is any student with orthogonal relation vectors; see
above), in the manner of relational knowledge distillation (Park et al., CVPR 2019). Reported as ``l_gram`` (not
``l_d``: near 0 it means agreement, not the collapse that :mod:`infosam_core.training.collapse` reads in L_d).

Collapse diagnostic: every step reports ``rel_cos_s``, the mean cosine between the student's relation
vectors of different samples of the batch (:func:`mean_pairwise_cosine`); near 1 the student's relation
vectors are one constant vector and L_d carries no information (:mod:`infosam_core.training.collapse`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from infosam_core.distill.base import Distiller, DistillInputs, DistillLoss, ModelDims
from infosam_core.distill.relation import RelationModule
from infosam_core.distill.renyi import gram, relation_compression_loss, relation_distillation_loss
from infosam_core.options import Options, bounds


@dataclass
class InfosamConfig(Options):
    """``alpha``: weight of L_r (relation compression); ``beta``: weight of L_d (relation distillation);
    ``warmup_steps``: relation-module warm-up; ``center``: centred relation vectors (both: see the module
    docstring; the defaults are the paper's)."""

    alpha: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    beta: float = field(default=0.5, metadata=bounds(0.0, 1e6))
    # relation-module warm-up: L_d trains only R for this many training steps
    warmup_steps: int = field(default=0, metadata=bounds(0, 10**9))
    center: bool = False  # centre each relation vector over the locations before normalising
    query: Literal["student", "teacher"] = "student"  # whose mask token queries the student's embedding
    l_d: Literal["mutual_information", "gram_match"] = "mutual_information"  # the distillation term's form


def gram_matching_loss(rel_teacher: torch.Tensor, rel_student: torch.Tensor) -> torch.Tensor:
    """``||G_r^S - G_r^T||_F^2`` over the batch's (B, B) cosine Gram matrices: 0 exactly when the student relates
    the samples to each other as the teacher does."""
    return ((gram(rel_student) - gram(rel_teacher)) ** 2).sum()


def mean_pairwise_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """The mean cosine between the rows of ``vectors`` (B, N) over all pairs of different rows (B >= 2);
    1 when every row points the same way. No gradient."""
    with torch.no_grad():
        unit = torch.nn.functional.normalize(vectors.float(), dim=1)
        gram = unit @ unit.T
        b = gram.shape[0]
        if b < 2:
            return torch.ones((), device=vectors.device)
        return (gram.sum() - gram.diagonal().sum()) / (b * (b - 1))


class InfosamDistiller(Distiller):
    name = "infosam"
    config_cls = InfosamConfig
    description = "InfoSAM: relation compression (L_r) + relation distillation (L_d)"
    title = "InfoSAM"
    recommended = True
    term_names = ("l_r", "l_d")
    diagnostic_names = ("rel_cos_s",)
    min_batch_size = 2  # B x B Gram matrices: a single sample carries no relation between samples

    def __init__(self, config: InfosamConfig, dims: ModelDims | int, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        embed_dim = dims if isinstance(dims, int) else dims.embed_dim
        self.relation = RelationModule(embed_dim, generator)
        if config.l_d == "gram_match":
            self.term_names = ("l_r", "l_gram")

    def relation_vectors(self, embeddings: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) image embeddings and (B, C) mask tokens -> (B, hw) unit relation vectors."""
        rel = self.relation(embeddings, token)
        if self.config.center:
            rel = torch.nn.functional.normalize(rel - rel.mean(dim=1, keepdim=True), dim=1)
        return rel

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        """Relation vectors per process, then Gram matrices over the global batch: the relation vectors
        (with their gradients), the teacher's embeddings and tokens go through ``inputs.gather``."""
        f_t, tok_t = inputs.teacher_embeddings, inputs.teacher_token()
        rel_t = inputs.gather(self.relation_vectors(f_t, tok_t))
        f_s = inputs.student_embeddings
        tok_s = tok_t if self.config.query == "teacher" else inputs.student_token
        if self.training and inputs.step < self.config.warmup_steps:
            f_s, tok_s = f_s.detach(), tok_s.detach()
        rel_s = inputs.gather(self.relation_vectors(f_s, tok_s))
        l_r = relation_compression_loss(inputs.gather(f_t), inputs.gather(tok_t), rel_t)
        if self.config.l_d == "gram_match":
            l_gram = gram_matching_loss(rel_t, rel_s)
            return DistillLoss(
                self.config.alpha * l_r + self.config.beta * l_gram,
                {"l_r": l_r, "l_gram": l_gram},
                {"rel_cos_s": mean_pairwise_cosine(rel_s)},
            )
        l_d = relation_distillation_loss(rel_t, rel_s)
        return DistillLoss(
            self.config.alpha * l_r + self.config.beta * l_d,
            {"l_r": l_r, "l_d": l_d},
            {"rel_cos_s": mean_pairwise_cosine(rel_s)},
        )


class WithRelationModule(Distiller):
    """Base for distillers with the ``relation_module`` option (the InfoSAM paper's "w RM" ablation, Table 5):
    their own loss plus InfoSAM's relation-module terms, ``L_method + rm_alpha * L_r + rm_beta * L_d``, with
    one shared :class:`RelationModule` trained by them (the most literal reading of "integrating the relation
    module"; the other reading, the method's own paired loss on the relation vectors, is not implemented).

    Subclasses set ``own_terms``, call :meth:`add_relation_terms` at the end of ``forward``, and their config
    has ``relation_module``, ``rm_alpha`` and ``rm_beta``. The relation module lives at ``infosam.relation``.
    """

    own_terms: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.term_names = cls.own_terms  # the default options' terms; an instance with the option adds L_r, L_d

    def __init__(self, config, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        self.infosam: InfosamDistiller | None = None
        self.term_names = self.own_terms
        if config.relation_module:
            self.infosam = InfosamDistiller(InfosamConfig(config.rm_alpha, config.rm_beta), dims, generator)
            self.term_names = (*self.own_terms, *InfosamDistiller.term_names)
            self.diagnostic_names = InfosamDistiller.diagnostic_names

    @classmethod
    def batch_size_problem(cls, config, batch_size: int) -> str | None:
        if config.relation_module and batch_size < 2:
            return (
                f"distiller {cls.name!r} with relation_module=true needs batch_size >= 2: InfoSAM's terms compare "
                "the samples of a batch (the paper uses 4)."
            )
        return super().batch_size_problem(config, batch_size)

    def add_relation_terms(self, inputs: DistillInputs, own: DistillLoss) -> DistillLoss:
        """``own`` plus InfoSAM's weighted terms when ``relation_module`` is on."""
        if self.infosam is None:
            return own
        extra = self.infosam(inputs)
        return DistillLoss(
            own.total + extra.total, {**own.terms, **extra.terms}, {**own.diagnostics, **extra.diagnostics}
        )
