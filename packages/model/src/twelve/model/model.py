"""`MultiTaskViLBERT`: the encoder, every task head of the config and the pretraining heads.

`forward(inputs, task)` computes only what that task's head reads: a region head skips the
poolers and the text layers after the last co-attention block; pooled heads skip nothing of
the encoder but no other head runs. The state dict carries exactly the original
`VILBertForVLTasks` key names (the decoder of the masked-LM head is tied to the word
embeddings and, as in the original, saved under both names).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from twelve.model.attention import AttentionImplementation
from twelve.model.config import ViLBERTConfig
from twelve.model.dropout import Dropout
from twelve.model.encoder import ViLBERTEncoder
from twelve.model.errors import UnknownTaskError
from twelve.model.heads import HeadInputs, PretrainingHeads, TaskHead, build_head
from twelve.model.inputs import EncoderOutput, PretrainingOutput, TaskOutput, ViLBERTInputs
from twelve.model.layers import BiOutput
from twelve.model.packed import PackedLinear
from twelve.model.reused_memory import release_cast_copies, release_training_memory


class MultiTaskViLBERT(nn.Module):
    """ViLBERT with the task heads of its config; one task per forward."""

    def __init__(self, config: ViLBERTConfig, *, attention: AttentionImplementation = "sdpa"):
        super().__init__()
        self.config = config
        self.bert = ViLBERTEncoder(config)
        self.cls = PretrainingHeads(config, self.bert.embeddings.word_embeddings)
        for name, spec in config.heads.items():
            self.add_module(name, build_head(spec, config))
        self.linguisic_logit = nn.Linear(config.text.hidden_size, 1)
        self.dropout = Dropout(config.head_dropout)
        self.reset_parameters()
        self.set_attention_implementation(attention)

    # ------------------------------------------------------------------------------ set-up

    def reset_parameters(self) -> None:
        """Initialise as the original: N(0, initializer_range) weights, zero biases, LN = 1/0."""
        std = self.config.initializer_range
        with torch.no_grad():
            for module in self.modules():
                weight = getattr(module, "weight", None)
                if weight is None or weight.is_meta:
                    continue
                if isinstance(module, nn.Linear | nn.Embedding | PackedLinear):
                    weight.normal_(0.0, std)
                    if getattr(module, "bias", None) is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.LayerNorm):
                    weight.fill_(1.0)
                    module.bias.zero_()
            if not self.cls.predictions.bias.is_meta:
                self.cls.predictions.bias.zero_()

    def tie_weights(self) -> None:
        """Make the masked-LM decoder share the word-embedding matrix (as the original)."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def train(self, mode: bool = True) -> MultiTaskViLBERT:
        """Set training mode. Entering it drops the cast weights kept for autocast inference;
        leaving it frees the memory the CPU training path keeps between steps
        (`twelve.model.reused_memory`)."""
        super().train(mode)
        if mode:
            release_cast_copies(self)
        else:
            release_training_memory(self)
        return self

    def set_attention_implementation(self, implementation: AttentionImplementation) -> None:
        """Switch every attention block between SDPA (fast) and eager (reference) computation."""
        self.bert.set_attention_implementation(implementation)

    def head(self, task: str) -> TaskHead:
        """The head module that serves `task` (raises `UnknownTaskError` for others)."""
        head = self.get_submodule(self.config.head_for(task))
        return head  # type: ignore[return-value]

    def task_token_ids(self, task: str, rows: int, device: torch.device) -> Tensor | None:
        """(rows, 1) task-token ids for `task`, or None when the model has no task tokens."""
        binding = self.config.tasks.get(task)
        if binding is None:
            raise UnknownTaskError(task, sorted(self.config.tasks))
        if not self.config.task_tokens:
            return None
        return torch.full((rows, 1), binding.token_id, dtype=torch.long, device=device)

    # ------------------------------------------------------------------------------ forward

    def forward(
        self,
        inputs: ViLBERTInputs,
        task: str,
        *,
        output_pooled: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> TaskOutput:
        """Run the encoder and `task`'s head only; extra outputs on request."""
        head = self.head(task)
        reads_pooled = head.reads == "pooled" or output_pooled
        need_text = reads_pooled or output_hidden_states
        encoded = self.bert(
            inputs,
            self.task_token_ids(task, inputs.batch_size, inputs.input_ids.device),
            need_text=need_text,
            need_vision=True,
            need_weights=output_attentions,
        )
        pooled = self.fuse(encoded) if reads_pooled else None
        head_inputs = HeadInputs(
            pooled=self.dropout(pooled) if pooled is not None and head.reads == "pooled" else None,
            vision_states=self.dropout(encoded.vision_states) if head.reads == "vision" else None,
            region_mask=inputs.region_mask,
        )
        return TaskOutput(
            task=task,
            logits=head(head_inputs),
            pooled=pooled if output_pooled else None,
            text_states=encoded.text_states if output_hidden_states else None,
            vision_states=encoded.vision_states if output_hidden_states else None,
            attentions=encoded.attentions,
        )

    def fuse(self, encoded: EncoderOutput) -> Tensor:
        """Fused pooled vector (before dropout): pooled text ∘ pooled vision (`mul` or `sum`)."""
        assert encoded.text_states is not None
        assert encoded.vision_states is not None
        pooled_text, pooled_vision = self.bert.pool(encoded.text_states, encoded.vision_states)
        if self.config.fusion == "mul":
            return pooled_text * pooled_vision
        return pooled_text + pooled_vision

    def forward_pretraining(
        self, inputs: ViLBERTInputs, task: str | None = None
    ) -> PretrainingOutput:
        """Pretraining outputs (masked LM, region classes, alignment); a task token only when
        `task` is given and the model has task tokens."""
        token_ids = (
            self.task_token_ids(task, inputs.batch_size, inputs.input_ids.device) if task else None
        )
        encoded = self.bert(inputs, token_ids)
        assert encoded.text_states is not None
        assert encoded.vision_states is not None
        fused = self.fuse(encoded)
        return PretrainingOutput(
            masked_lm_logits=self.cls.predictions(encoded.text_states),
            image_logits=self.cls.imagePredictions(encoded.vision_states),
            alignment_logits=self.cls.bi_seq_relationship(self.cls.dropout(fused)),
        )

    # ------------------------------------------------------------------------------ facts

    def parameter_counts(self) -> dict[str, int]:
        """Unique parameters per module group (`bert.embeddings`, `bert.encoder.layer`, heads…);
        tied weights count once, where they live."""
        seen: set[int] = set()
        counts: dict[str, int] = {}
        for name, parameter in self.named_parameters():
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            parts = name.split(".")
            depth = 3 if parts[:2] == ["bert", "encoder"] else 2 if parts[0] == "bert" else 1
            group = ".".join(parts[:depth])
            counts[group] = counts.get(group, 0) + parameter.numel()
        return counts

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        """Unique parameters (the dead `q_dense` weights are frozen, so `trainable_only`
        leaves them out)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def dead_parameter_names(model: MultiTaskViLBERT) -> list[str]:
    """Names of the original's never-used weights (`biOutput.q_dense1/2`), kept for parity."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, BiOutput):
            for dead in ("q_dense1", "q_dense2"):
                names += [f"{module_name}.{dead}.weight", f"{module_name}.{dead}.bias"]
    return names
