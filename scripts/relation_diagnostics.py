"""Why an InfoSAM student's relation vectors collapse: token vs feature drift and the score offset.

    python scripts/relation_diagnostics.py --adapter runs/x/adapter --data data/nuclei/train --images 4

For each image (prompt: the mask's tight box) prints, for the pairs (teacher features, teacher token),
(student, student), (teacher features, student token) and (student features, teacher token): the relation
module's score offset shared by all locations (the mean of the scores) against their spread (std), the
student's relative token and feature change, and per pair the mean cosine between the relation vectors of
different images (1 = every image gives the same relation vector: the B x B Gram matrix is rank one and the
InfoSAM terms carry no information).
"""

from __future__ import annotations

import argparse

import torch

from infosam_core.adapter_files.checkpoint import load_peft_checkpoint
from infosam_core.data.datasets import load_folder_dataset
from infosam_core.data.prompt_sampling import box_from_mask
from infosam_core.evaluation.relation_maps import _embedding_and_token
from infosam_core.models.registry import load_sam


@torch.no_grad()
def score_parts(distiller, features: torch.Tensor, token: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(mean, std) of the relation scores over the locations, and the relation vector actually used."""
    r = distiller.relation
    f = r.norm_features(features.flatten(2).transpose(1, 2))
    m = r.norm_token(token[:, None])
    q = r.query(m)
    scores = ((q @ r.key.weight) * r.scale + m) @ f.transpose(1, 2) + (q * r.key.bias).sum(-1, keepdim=True) * r.scale
    return scores.mean().item(), scores.std().item(), distiller.relation_vectors(features, token)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, help="an adapter trained with InfoSAM (without the suffix)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_sam(args.model)
    student = load_peft_checkpoint(base, args.adapter).eval()
    samples = [s for s in load_folder_dataset(args.data) if s.mask.any()][: args.images]
    pairs = {
        "teacher": ("t", "t"),
        "student": ("s", "s"),
        "T feat + S token": ("t", "s"),
        "S feat + T token": ("s", "t"),
    }
    vectors: dict[str, list[torch.Tensor]] = {k: [] for k in pairs}
    for sample in samples:
        box = box_from_mask(sample.mask)
        emb = {
            "t": _embedding_and_token(base, sample.image, box),
            "s": _embedding_and_token(student, sample.image, box),
        }
        token_change = ((emb["s"][1] - emb["t"][1]).norm() / emb["t"][1].norm()).item()
        feature_change = ((emb["s"][0] - emb["t"][0]).norm() / emb["t"][0].norm()).item()
        print(f"{sample.name[:12]}: token change {token_change:.0%}, feature change {feature_change:.0%}")
        for name, (fk, tk) in pairs.items():
            mean, std, rel = score_parts(student.distiller, emb[fk][0], emb[tk][1])
            vectors[name].append(rel)
            print(f"  {name:<17} score offset {mean:+8.2f}  spread {std:6.2f}")
    for name, vs in vectors.items():
        v = torch.stack(vs)
        gram = v @ v.T
        n = len(vs)
        print(f"{name:<17} mean cosine between images {(gram.sum() - gram.trace()).item() / (n * (n - 1)):.3f}")


if __name__ == "__main__":
    main()
