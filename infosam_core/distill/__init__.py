"""InfoSAM distillation: the relation module, the Renyi-entropy losses and the decoder run that exposes the
mask token.

* :class:`RelationModule` -- relation vectors (B, HW) from image features and the mask token.
* :mod:`.renyi` -- ``relation_compression_loss`` (L_r) and ``relation_distillation_loss`` (L_d).
* :func:`decode` -- segment-anything's mask decoder, batched one prompt per image, single-mask output,
  returning the mask token ``hs[:, 1, :]`` as well; :func:`mask_token` -- only that token (the teacher's part).
"""

from infosam_core.distill.decode import decode, mask_token
from infosam_core.distill.relation import RelationModule
from infosam_core.distill.renyi import gram, relation_compression_loss, relation_distillation_loss, renyi_entropy

__all__ = [
    "RelationModule",
    "decode",
    "mask_token",
    "gram",
    "relation_compression_loss",
    "relation_distillation_loss",
    "renyi_entropy",
]
