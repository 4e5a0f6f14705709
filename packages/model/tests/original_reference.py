"""A plain, eager re-statement of the original `VILBertForVLTasks` forward (evaluation mode).

Written from the specification (original-system.md §1), independently of twelve.model: it reads
weights by their ORIGINAL state-dict names and computes with the most literal operations —
matmul + softmax attention with additive −10000 masks, TF-style LayerNorm (biased variance, eps
inside the square root), erf GeLU, the encoder schedule of `BertEncoder.forward`, every head of
the original including the masked-LM head tied to the word embeddings, and the odd-batch quirk
of output 3. `q_dense1/2` are never read. It is the parity reference of the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

EPS = 1e-12


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = (x - mean).pow(2).mean(-1, keepdim=True)
    return weight * ((x - mean) / torch.sqrt(variance + EPS)) + bias


def gelu(x: Tensor) -> Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class Weights:
    """Access to a state dict by original names."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        self.state = state

    def linear(self, name: str, x: Tensor) -> Tensor:
        out = x.matmul(self.state[f"{name}.weight"].t())
        bias = self.state.get(f"{name}.bias")
        return out + bias if bias is not None else out

    def ln(self, name: str, x: Tensor) -> Tensor:
        return layer_norm(x, self.state[f"{name}.weight"], self.state[f"{name}.bias"])

    def __getitem__(self, name: str) -> Tensor:
        return self.state[name]


def heads_view(x: Tensor, heads: int) -> Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).permute(0, 2, 1, 3)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    q, k, v = heads_view(q, heads), heads_view(k, heads), heads_view(v, heads)
    scores = torch.matmul(q, k.transpose(-1, -2))
    scores = scores / math.sqrt(q.shape[-1])
    scores = scores + mask
    probs = torch.nn.Softmax(dim=-1)(scores)
    context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
    return context.view(context.shape[0], context.shape[1], -1), probs


def bert_layer(w: Weights, name: str, x: Tensor, mask: Tensor, heads: int) -> Tensor:
    q = w.linear(f"{name}.attention.self.query", x)
    k = w.linear(f"{name}.attention.self.key", x)
    v = w.linear(f"{name}.attention.self.value", x)
    context, _ = attention(q, k, v, mask, heads)
    attended = w.ln(
        f"{name}.attention.output.LayerNorm",
        w.linear(f"{name}.attention.output.dense", context) + x,
    )
    inner = gelu(w.linear(f"{name}.intermediate.dense", attended))
    return w.ln(f"{name}.output.LayerNorm", w.linear(f"{name}.output.dense", inner) + attended)


def connection_layer(
    w: Weights,
    name: str,
    image: Tensor,
    image_mask: Tensor,
    text: Tensor,
    text_mask: Tensor,
    heads: int,
) -> tuple[Tensor, Tensor]:
    b = f"{name}.biattention"
    query1 = w.linear(f"{b}.query1", image)
    key1 = w.linear(f"{b}.key1", image)
    value1 = w.linear(f"{b}.value1", image)
    query2 = w.linear(f"{b}.query2", text)
    key2 = w.linear(f"{b}.key2", text)
    value2 = w.linear(f"{b}.value2", text)
    # text queries attend over the image (image mask) → text-side context
    context1, _ = attention(query2, key1, value1, image_mask, heads)
    # image queries attend over the text (text mask) → image-side context
    context2, _ = attention(query1, key2, value2, text_mask, heads)
    o = f"{name}.biOutput"
    image_att = w.ln(f"{o}.LayerNorm1", w.linear(f"{o}.dense1", context2) + image)
    text_att = w.ln(f"{o}.LayerNorm2", w.linear(f"{o}.dense2", context1) + text)
    image_inner = gelu(w.linear(f"{name}.v_intermediate.dense", image_att))
    image_out = w.ln(
        f"{name}.v_output.LayerNorm", w.linear(f"{name}.v_output.dense", image_inner) + image_att
    )
    text_inner = gelu(w.linear(f"{name}.t_intermediate.dense", text_att))
    text_out = w.ln(
        f"{name}.t_output.LayerNorm", w.linear(f"{name}.t_output.dense", text_inner) + text_att
    )
    return image_out, text_out


def original_forward(
    state: Mapping[str, Tensor],
    config: Mapping[str, Any],
    input_txt: Tensor,
    input_imgs: Tensor,
    image_loc: Tensor,
    token_type_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
    image_attention_mask: Tensor | None = None,
    task_ids: Tensor | None = None,
) -> tuple[Any, ...]:
    """The 10 outputs of the original `VILBertForVLTasks.forward` in evaluation mode."""
    w = Weights(state)
    task_tokens = bool(config.get("task_specific_tokens", False))
    fusion = config.get("fusion_method", "mul")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_txt)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_txt)
    if image_attention_mask is None:
        image_attention_mask = torch.ones(input_imgs.size(0), input_imgs.size(1))

    # BertModel.forward: masks
    if task_tokens:
        ones = attention_mask.new_ones(attention_mask.size(0), 1)
        attention_mask = torch.cat([ones, attention_mask], dim=1)
    dtype = state["bert.embeddings.word_embeddings.weight"].dtype
    ext_text = attention_mask.unsqueeze(1).unsqueeze(2).to(dtype)
    ext_text = (1.0 - ext_text) * -10000.0
    ext_image = image_attention_mask.unsqueeze(1).unsqueeze(2).to(dtype)
    ext_image = (1.0 - ext_image) * -10000.0

    # BertEmbeddings
    seq_length = input_txt.size(1)
    position_ids = torch.arange(seq_length, dtype=torch.long).unsqueeze(0).expand_as(input_txt)
    words = w["bert.embeddings.word_embeddings.weight"][input_txt]
    positions = w["bert.embeddings.position_embeddings.weight"][position_ids]
    types = w["bert.embeddings.token_type_embeddings.weight"][token_type_ids]
    embeddings = words + positions + types
    if task_tokens:
        task_embedding = w["bert.embeddings.task_embeddings.weight"][task_ids]
        embeddings = torch.cat([embeddings[:, 0:1], task_embedding, embeddings[:, 1:]], dim=1)
    text = w.ln("bert.embeddings.LayerNorm", embeddings)

    # BertImageEmbeddings
    image = w.ln(
        "bert.v_embeddings.LayerNorm",
        w.linear("bert.v_embeddings.image_embeddings", input_imgs)
        + w.linear("bert.v_embeddings.image_location_embeddings", image_loc),
    )

    # BertEncoder schedule
    t_heads = config["num_attention_heads"]
    v_heads = config["v_num_attention_heads"]
    bi_heads = config["bi_num_attention_heads"]
    v_ids, t_ids = config["v_biattention_id"], config["t_biattention_id"]
    v_start = t_start = 0
    for count, (v_end, t_end) in enumerate(zip(v_ids, t_ids, strict=True)):
        for idx in range(v_start, v_end):
            image = bert_layer(w, f"bert.encoder.v_layer.{idx}", image, ext_image, v_heads)
        for idx in range(t_start, t_end):
            text = bert_layer(w, f"bert.encoder.layer.{idx}", text, ext_text, t_heads)
        image, text = connection_layer(
            w, f"bert.encoder.c_layer.{count}", image, ext_image, text, ext_text, bi_heads
        )
        v_start, t_start = v_end, t_end
    for idx in range(v_start, config["v_num_hidden_layers"]):
        image = bert_layer(w, f"bert.encoder.v_layer.{idx}", image, ext_image, v_heads)
    for idx in range(t_start, config["num_hidden_layers"]):
        text = bert_layer(w, f"bert.encoder.layer.{idx}", text, ext_text, t_heads)

    # poolers
    pooled_t = torch.relu(w.linear("bert.t_pooler.dense", text[:, 0]))
    pooled_v = torch.relu(w.linear("bert.v_pooler.dense", image[:, 0]))

    # BertPreTrainingHeads (cls): every output computed, as the original does
    fused = pooled_t + pooled_v if fusion == "sum" else pooled_t * pooled_v
    transformed = w.ln(
        "cls.predictions.transform.LayerNorm",
        gelu(w.linear("cls.predictions.transform.dense", text)),
    )
    linguisic_prediction = (
        transformed.matmul(w["bert.embeddings.word_embeddings.weight"].t())
        + w["cls.predictions.bias"]
    )
    vil_binary_prediction = w.linear("cls.bi_seq_relationship", fused)
    image_transformed = w.ln(
        "cls.imagePredictions.transform.LayerNorm",
        gelu(w.linear("cls.imagePredictions.transform.dense", image)),
    )
    vision_prediction = w.linear("cls.imagePredictions.decoder", image_transformed)

    def simple_classifier(name: str, x: Tensor) -> Tensor:
        hidden = layer_norm(
            gelu(w.linear(f"{name}.logit_fc.0", x)),
            w[f"{name}.logit_fc.2.weight"],
            w[f"{name}.logit_fc.2.bias"],
        )
        return w.linear(f"{name}.logit_fc.3", hidden)

    vil_prediction = simple_classifier("vil_prediction", fused)
    vil_prediction_gqa = simple_classifier("vil_prediction_gqa", fused)
    if fused.size(0) % 2 == 0:
        vil_binary_prediction = simple_classifier(
            "vil_binary_prediction", fused.view(-1, fused.size(1) * 2)
        )
    vil_logit = w.linear("vil_logit", fused)
    vil_tri_prediction = w.linear("vil_tri_prediction", fused)
    vision_logit = w.linear("vision_logit", image) + (
        (1.0 - image_attention_mask) * -10000.0
    ).unsqueeze(2).to(torch.float32)
    linguisic_logit = w.linear("linguisic_logit", text)
    return (
        vil_prediction,
        vil_prediction_gqa,
        vil_logit,
        vil_binary_prediction,
        vil_tri_prediction,
        vision_prediction,
        vision_logit,
        linguisic_prediction,
        linguisic_logit,
        ((), (), ()),
    )
