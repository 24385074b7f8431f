"""segment-anything's mask decoder for interactive prompting: same outputs, less work per prompt.

While a user clicks on one image, every prompt runs SAM's mask decoder on the same image embedding:
a two-way transformer between a handful of prompt tokens (T = 5 output tokens + the prompt's points
and box corners) and N image tokens (4,096 for SAM), then two transposed convolutions. Written for
training on batches, the reference spends most of its time on per-image-token work that a single
prompt does not need. :class:`InteractiveDecoder` computes the same function with the same modules
and weights, arranged for one image and few prompt tokens:

* **Prompt-independent work is done once per image.** Without a mask prompt the image tokens are
  ``embedding + no_mask_embed``; the first block's token->image key and value projections and its
  image->token query projection depend on them alone, as does the dense positional encoding. They
  are computed on the first prompt and reused until the embedding or the decoder's weights change.
* **Projections of the N image tokens are folded into the T prompt tokens.** Token->image attention
  needs ``q . (W_k x + b_k) = (W_k^T q) . x + q . b_k`` and, because softmax weights sum to one,
  ``sum_n a_n (W_v x_n + b_v) = W_v (sum_n a_n x_n) + b_v``; image->token attention folds its query
  projection into the keys and its values into the output projection. The N x C x C_attn products
  become N x C x (heads x T) ones (8 x 7 = 56 columns for one point, against C_attn = 128), and no
  N-row tensor is ever split into heads: every head is handled at once through block-diagonal
  matrices of the T prompt tokens.
* **The transposed convolutions are matrix products.** ``output_upscaling``'s ConvTranspose2d layers
  have kernel 2 and stride 2, so each output pixel depends on one input pixel: the layer is one
  (pixels x C_in) @ (C_in x 4 C_out) product on the token-major layout the transformer produces, biases
  inside the product, run in blocks of image rows whose intermediates stay in the CPU cache.

ViT-B-sized decoder, 2 CPU threads: 45.5 ms median per prompt (``Predictor.predict``, post-processing
included) against 99.8 ms for segment-anything's own path in the same run
(``benchmarks/bench_predict.py``). Outputs agree with ``MaskDecoder.forward`` to float32 rounding
(tests: logits within 1e-4, IoU predictions within 1e-5).

Used by :class:`infosam_core.inference.predictor.Predictor` whenever the model's decoder is segment-anything's
stock ``MaskDecoder`` with plain ``nn.Linear`` attention projections (:func:`supports`; otherwise,
e.g. for a subclass or a LoRA-wrapped projection, the predictor calls the decoder itself).
Inference only (under ``torch.inference_mode``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MaskDecoder
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer
from torch import nn

from infosam_core.models.fingerprint import weights_stamp
from infosam_core.models.fused_attention import FusedDecoderAttention
from infosam_core.models.protocols import SamLike

#: image tokens per block of the mask upscaling (4096 x 16 pixels x 32 channels = 8 MB); see ``_upscaled_masks``
UPSCALE_BLOCK_TOKENS = 4096


def first_two_way_layer(transformer: TwoWayTransformer) -> TwoWayAttentionBlock:
    """The first attention block of the decoder's two-way transformer (the one without positional encoding on
    its first self-attention), whose image-side projections are precomputed per image."""
    return next(iter(transformer.layers))


def supports(sam: SamLike) -> bool:
    """True when ``sam``'s decoder is segment-anything's stock MaskDecoder / TwoWayTransformer layout."""
    decoder = sam.mask_decoder
    if type(decoder) is not MaskDecoder or type(decoder.transformer) is not TwoWayTransformer:
        return False
    transformer = decoder.transformer
    if not all(type(layer) is TwoWayAttentionBlock for layer in transformer.layers) or len(transformer.layers) == 0:
        return False
    if not first_two_way_layer(transformer).skip_first_layer_pe:
        return False
    attentions = [transformer.final_attn_token_to_image]
    for layer in transformer.layers:
        attentions += [layer.self_attn, layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
    if not all(type(a) in (Attention, FusedDecoderAttention) for a in attentions):  # same weights, same maths
        return False
    # the projections' weights are used directly (folded into the prompt side): plain Linear layers only,
    # not a subclass that adds to them (e.g. a LoRA layer)
    if not all(
        type(getattr(a, p)) is nn.Linear for a in attentions for p in ("q_proj", "k_proj", "v_proj", "out_proj")
    ):
        return False
    up = decoder.output_upscaling
    if not (isinstance(up, nn.Sequential) and len(up) == 5):
        return False
    conv1, norm, act1, conv2, act2 = up
    return (
        all(_is_patch_deconv(c) for c in (conv1, conv2))
        and type(norm) is LayerNorm2d
        and all(type(a) in (nn.GELU, nn.ReLU) for a in (act1, act2))
    )


def _is_patch_deconv(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.ConvTranspose2d
        and conv.kernel_size == (2, 2)
        and conv.stride == (2, 2)
        and conv.padding == (0, 0)
        and conv.output_padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


@dataclass
class _ImageState:
    """Everything the decoder computes from the image alone (batch of one image)."""

    embedding: torch.Tensor  # the (1, C, h, w) tensor this was computed from (compared by identity)
    stamp: tuple
    pos: torch.Tensor  # (1, HW, C) dense positional encoding, token-major
    src: torch.Tensor | None = None  # (1, HW, C) embedding + no_mask_embed
    key0: torch.Tensor | None = None  # first block, token->image key projections    (1, HW, C_attn)
    value0: torch.Tensor | None = None  # first block, token->image value projections (1, HW, C_attn)
    query0: torch.Tensor | None = None  # first block, image->token query projections (1, HW, C_attn)


class InteractiveDecoder:
    """``sam.mask_decoder`` for one image and many prompts (see the module docstring).

    ``decoder(image_embeddings, sparse, dense, multimask_output)`` returns ``(low_res_masks, iou)``
    like ``MaskDecoder.forward``; pass ``dense=None`` when there is no mask prompt (the decoder's
    no-mask embedding), which enables the per-image cache.
    """

    def __init__(self, sam: Sam) -> None:
        if not supports(sam):
            raise TypeError(f"{type(sam.mask_decoder).__name__} is not segment-anything's stock MaskDecoder layout")
        self.sam = sam
        self._state: _ImageState | None = None

    def clear(self) -> None:
        """Forget the cached image state (it is also dropped on its own when the embedding changes)."""
        self._state = None

    # ------------------------------------------------------------------------------------------ state
    def _image_state(self, embedding: torch.Tensor) -> _ImageState:
        stamp = (weights_stamp(self.sam.mask_decoder), weights_stamp(self.sam.prompt_encoder))
        state = self._state
        if state is None or state.embedding is not embedding or state.stamp != stamp:
            pe = self.sam.prompt_encoder.get_dense_pe()  # (1, C, h, w)
            state = _ImageState(embedding=embedding, stamp=stamp, pos=pe.flatten(2).permute(0, 2, 1).contiguous())
            self._state = state
        return state

    def _no_mask_state(self, state: _ImageState) -> _ImageState:
        if state.src is None:
            dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            src = (state.embedding + dense).flatten(2).permute(0, 2, 1).contiguous()
            first = first_two_way_layer(self.sam.mask_decoder.transformer)
            pos_src = src + state.pos
            state.key0 = first.cross_attn_token_to_image.k_proj(pos_src)
            state.value0 = first.cross_attn_token_to_image.v_proj(src)
            state.query0 = first.cross_attn_image_to_token.q_proj(pos_src)
            state.src = src
        return state

    # ---------------------------------------------------------------------------------------- forward
    @torch.inference_mode()
    def __call__(
        self,
        image_embeddings: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | None,
        multimask_output: bool,
        keep_prompts: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masks, iou)``; with ``keep_prompts`` (predicted IoUs (B, M) -> (B,) bool), masks only for the
        prompts it keeps, in order (the upscaling, most of a segment-all pass, is skipped for the others)."""
        if image_embeddings.shape[0] != 1:
            raise ValueError(
                f"InteractiveDecoder takes one image embedding, got a batch of {image_embeddings.shape[0]}"
            )
        decoder = self.sam.mask_decoder
        state = self._image_state(image_embeddings)
        n_prompts = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(n_prompts, -1, -1), sparse_prompt_embeddings), dim=1)

        if dense_prompt_embeddings is None:
            state = self._no_mask_state(state)
            cached = state
            src = state.src
            assert src is not None  # set by _no_mask_state
        else:
            cached = None
            src = (image_embeddings + dense_prompt_embeddings).flatten(2).permute(0, 2, 1).contiguous()
        queries, keys = self._transformer(tokens, src, state.pos, cached)

        iou_token_out = queries[:, 0, :]
        mask_tokens_out = queries[:, 1 : 1 + decoder.num_mask_tokens, :]
        h, w = image_embeddings.shape[-2:]
        first = 1 if multimask_output else 0
        last = decoder.num_mask_tokens if multimask_output else 1
        hyper_in = torch.stack(
            [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(first, last)], dim=1
        )
        iou_pred = decoder.iou_prediction_head(iou_token_out)[:, first:last]
        if keep_prompts is not None:
            rows = keep_prompts(iou_pred)
            keys, hyper_in = keys[rows], hyper_in[rows]
        masks = self._upscaled_masks(keys, hyper_in, h, w)
        return masks, iou_pred

    def _transformer(
        self, tokens: torch.Tensor, src: torch.Tensor, pos: torch.Tensor, cached: _ImageState | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TwoWayTransformer.forward on token-major image tokens ``src`` (B or 1, HW, C)."""
        transformer = self.sam.mask_decoder.transformer
        queries, keys = tokens, src
        for index, layer in enumerate(transformer.layers):
            first_cached = cached if index == 0 else None  # the projections cached for the first block
            # self-attention among the prompt tokens (the first block skips the positional encoding)
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            # tokens -> image
            keys_pos = None if first_cached is not None else keys + pos
            attn = layer.cross_attn_token_to_image
            if first_cached is not None:
                out = _token_to_image(
                    attn, queries + tokens, key_proj=first_cached.key0, value_proj=first_cached.value0
                )
            else:
                out = _token_to_image(attn, queries + tokens, key_input=keys_pos, value_input=keys)
            queries = layer.norm2(queries + out)
            queries = layer.norm3(queries + layer.mlp(queries))
            # image -> tokens
            attn = layer.cross_attn_image_to_token
            if first_cached is not None:
                keys = _image_to_token(attn, keys, queries + tokens, queries, query_proj=first_cached.query0)
            else:
                keys = _image_to_token(attn, keys, queries + tokens, queries, query_input=keys_pos)
            keys = layer.norm4(keys)
        attn = transformer.final_attn_token_to_image
        out = _token_to_image(attn, queries + tokens, key_input=keys + pos, value_input=keys)
        queries = transformer.norm_final_attn(queries + out)
        return queries, keys

    def _upscaled_masks(self, keys: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``hyper_in @ output_upscaling(keys)``: (B, M, C') and (B, HW, C) tokens -> (B, M, 4h, 4w) logits.

        Both transposed convolutions run as products on token-major (channels-last) pixels, biases
        inside the products; the sub-pixel positions stay as extra axes until the final masks are put
        in image order. The work goes in blocks of about :data:`UPSCALE_BLOCK_TOKENS` image tokens -- whole
        prompts' images when they are small, rows of one prompt's otherwise -- so that each block's
        intermediates stay small while each operation is large enough that its cost, not the threads'
        start and join, is what a pass pays: a block per prompt and row (SAM-sized) made segment-all on a
        busy 2-core machine 3-6x slower with 2 threads than with 1.
        """
        conv1, norm, act1, conv2, act2 = self.sam.mask_decoder.output_upscaling
        b, hw, c = keys.shape
        c1, c2 = conv1.out_channels, conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)  # (C, (a1, b1, c1))
        b1 = conv1.bias.repeat(4)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # (c1, (a2, b2, c2))
        b2 = conv2.bias.repeat(4)
        m = hyper_in.shape[1]
        masks = keys.new_empty(b, m, h, w, 16)
        rows = min(h, max(1, UPSCALE_BLOCK_TOKENS // w))  # image rows per block
        prompts = max(1, UPSCALE_BLOCK_TOKENS // hw) if rows == h else 1  # prompts per block
        for i0 in range(0, b, prompts):
            i1 = min(b, i0 + prompts)
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                tokens = keys[i0:i1, r0 * w : r1 * w].reshape(-1, c)  # (p*n, C)
                x = torch.addmm(b1, tokens, w1).view(-1, c1)  # (p*n*4, c1) in (prompt, token, a1, b1) order
                x = act1(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
                x = act2(torch.addmm(b2, x, w2).view(i1 - i0, -1, c2))  # (p, n*16, c2): (token, a1, b1, a2, b2)
                masks[i0:i1, :, r0:r1] = torch.bmm(hyper_in[i0:i1], x.transpose(1, 2)).view(i1 - i0, m, r1 - r0, w, 16)
        masks = masks.view(b, m, h, w, 2, 2, 2, 2)  # (b, m, i, j, a1, b1, a2, b2)
        # output row = 4i + 2a1 + a2, column = 4j + 2b1 + b2
        return masks.permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(b, m, 4 * h, 4 * w)


def _heads(x: torch.Tensor, attn: Attention) -> torch.Tensor:
    """(B, T, C_attn) -> (B, heads, T, d)."""
    b, n, c = x.shape
    return x.reshape(b, n, attn.num_heads, c // attn.num_heads).transpose(1, 2)


def _block_diagonal(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) -> (B, heads*d, heads*T) with head h's (d, T) transpose on the diagonal.

    Multiplying token-major image features (N, heads*d) by it gives every head's scores against its
    own T prompt tokens in one matrix product, (N, heads*T), with no head split of the N rows.
    """
    b, heads, t, d = x.shape
    out = x.new_zeros(b, heads, d, heads, t)
    index = torch.arange(heads, device=x.device)
    out[:, index, :, index, :] = x.transpose(-1, -2).transpose(0, 1)  # advanced indices come first
    return out.reshape(b, heads * d, heads * t)


def _matmul_shared(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a @ x`` for a (B, m, k) and x (B or 1, k, n) without copying a shared ``x`` B times."""
    if x.shape[0] == 1 and a.shape[0] > 1:
        b, m, k = a.shape
        return (a.reshape(b * m, k) @ x[0]).view(b, m, -1)
    return a @ x


def _token_to_image(
    attn: Attention,
    query_input: torch.Tensor,
    key_input: torch.Tensor | None = None,
    value_input: torch.Tensor | None = None,
    key_proj: torch.Tensor | None = None,
    value_proj: torch.Tensor | None = None,
) -> torch.Tensor:
    """``attn(q=query_input, k=key_input, v=value_input)`` for few queries (prompt tokens) and many keys.

    query_input (B, T, C). Either the image inputs (B or 1, N, C), or their projections ``key_proj`` /
    ``value_proj`` (1, N, C_attn) computed before. With inputs, the key and value projections are
    folded into the (small) query side: q.(W_k x + b_k) = (W_k^T q).x + q.b_k, and since each softmax
    row sums to one, sum_n a_n (W_v x_n + b_v) = W_v (sum_n a_n x_n) + b_v. That skips projecting all N
    image tokens (two (N, C) x (C, C_attn) products) at each call.
    """
    heads = attn.num_heads
    b, t, _ = query_input.shape
    q = _heads(attn.q_proj(query_input), attn)  # (B, H, T, d)
    d = q.shape[-1]
    q_diag = _block_diagonal(q / math.sqrt(d)).transpose(1, 2)  # (B, H*T, C_attn)
    if key_proj is not None:
        scores = _matmul_shared(q_diag, key_proj.transpose(1, 2))  # (B, H*T, N)
    else:
        assert key_input is not None  # the input when there is no projection
        weight, bias = attn.k_proj.weight, attn.k_proj.bias  # (C_attn, C), (C_attn,)
        scores = _matmul_shared(q_diag @ weight, key_input.transpose(1, 2)) + (q_diag @ bias).unsqueeze(-1)
    probs = torch.softmax(scores, dim=-1)
    if value_proj is not None:
        mixed = _matmul_shared(probs, value_proj).view(b, heads, t, heads, d)  # (B, H, T, H, d)
        index = torch.arange(heads, device=mixed.device)
        out = mixed[:, index, :, index, :].permute(1, 2, 0, 3)  # (B, T, H, d): each head's own block
    else:
        assert value_input is not None  # the input when there is no projection
        mixed = _matmul_shared(probs, value_input).view(b, heads, t, -1)  # (B, H, T, C)
        weight = attn.v_proj.weight.view(heads, d, -1)  # (H, d, C)
        out = torch.einsum("bhtc,hdc->bthd", mixed, weight) + attn.v_proj.bias.view(heads, d)
    return attn.out_proj(out.reshape(b, t, heads * d))


def _image_to_token(
    attn: Attention,
    residual: torch.Tensor,
    key_input: torch.Tensor,
    value_input: torch.Tensor,
    query_input: torch.Tensor | None = None,
    query_proj: torch.Tensor | None = None,
) -> torch.Tensor:
    """``residual + attn(q=query_input, k=key_input, v=value_input)`` for many queries (image tokens).

    key_input / value_input (B, T, C) prompt tokens; query_input (B or 1, N, C) image tokens, or their
    projection ``query_proj`` (1, N, C_attn). The heads are handled by block-diagonal matrices of the T
    keys and values, so the N image rows are never split into heads; the query projection is folded
    into the keys, and the values into the output projection ((N, H*T) @ (H*T, C) for all heads at
    once, added to ``residual`` in the same product). The output bias is spread over the H*T columns:
    each head's softmax row sums to one, so the row sums of the (N, H*T) weights are H.
    """
    heads = attn.num_heads
    k = _heads(attn.k_proj(key_input), attn)  # (B, H, T, d)
    v = _heads(attn.v_proj(value_input), attn)
    b, _, t, d = k.shape
    k_rows = _block_diagonal(k / math.sqrt(d)).transpose(1, 2)  # (B, H*T, C_attn)
    # scores as (B, H*T, N): the softmax over each head's T tokens then runs along contiguous N rows
    if query_proj is not None:
        scores = _matmul_shared(k_rows, query_proj.transpose(1, 2))
    else:
        assert query_input is not None  # the input when there is no projection
        weight, bias = attn.q_proj.weight, attn.q_proj.bias  # (C_attn, C)
        scores = torch.baddbmm(
            (k_rows @ bias).unsqueeze(-1), k_rows @ weight, query_input.transpose(1, 2).expand(b, -1, -1)
        )
    n = scores.shape[-1]
    probs = torch.softmax(scores.view(b, heads, t, n), dim=2).view(b, heads * t, n)
    v_diag = _block_diagonal(v).transpose(1, 2)  # (B, H*T, C_attn)
    mix = v_diag @ attn.out_proj.weight.t() + attn.out_proj.bias / heads  # (B, H*T, C)
    return torch.baddbmm(residual.expand(b, -1, -1), probs.transpose(1, 2), mix)
