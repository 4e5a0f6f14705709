"""The CPU training paths: memory kept from step to step (linear layers, embeddings, GeLU,
attention) and packed-projection attention.

They must give the stock computation's values (up to float rounding; GeLU exactly) and stock
autograd semantics: gradients accumulate across backward passes, a tensor or gradient still
referenced is never overwritten, the padding row of an embedding gets no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

import twelve.model.layers as layers
import twelve.model.packed_attention as packed_attention
import twelve.model.reused_memory as reused_memory
from twelve.model.attention import additive_mask
from twelve.model.config import ViLBERTConfig
from twelve.model.inputs import ViLBERTInputs
from twelve.model.model import MultiTaskViLBERT
from twelve.model.packed_attention import AttentionMemory, PackedProblem, attend_packed
from twelve.model.residual_norm import ResidualNormMemory
from twelve.model.reused_memory import Embedding, GeluMemory, Linear, gelu


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.skipif(
    reused_memory._use_count is None, reason="this torch cannot count storage references"
)
def test_reused_storage_hands_out_its_block_only_while_nobody_holds_it() -> None:
    storage = reused_memory.ReusedStorage()
    like = torch.zeros(1)
    first = storage.take((2, 3), like)
    assert first.shape == (2, 3)
    assert first.is_contiguous()
    second = storage.take((2, 3), like)  # `first` is still referred to: a new block, kept
    assert second.data_ptr() != first.data_ptr()
    block = second.data_ptr()
    del first, second
    assert storage.take((2, 3), like).data_ptr() == block  # free again: handed out again
    kept = storage.take((2, 3), like)
    assert storage.take((2, 3), like).data_ptr() != block  # held by `kept`: not handed out
    block = storage.take((2, 3), like).data_ptr()
    del kept
    smaller = storage.take((5,), like)  # a smaller shape reuses the block
    assert smaller.shape == (5,)
    assert smaller.data_ptr() == block
    smaller.fill_(7.0)
    del smaller
    assert storage.take((2, 3), like).data_ptr() == block  # and back
    larger = storage.take((4, 4), like)  # a larger one grows it
    assert larger.shape == (4, 4)
    assert larger.numel() == 16
    block = larger.data_ptr()
    del larger
    assert storage.take((4, 4), like).data_ptr() == block
    assert storage.take((4, 4), like, torch.float64).dtype == torch.float64  # dtype: new block
    storage.release()
    assert storage._block is None
    assert storage._view is None


def test_linear_reuses_its_gradient_storage_only_when_free() -> None:
    torch.manual_seed(0)
    layer = Linear(6, 5)
    x = torch.randn(3, 4, 6, requires_grad=True)
    layer(x).square().sum().backward()
    expected_weight = layer.weight.grad.clone()  # type: ignore[union-attr]
    reference = torch.nn.Linear(6, 5)
    reference.load_state_dict(layer.state_dict())
    x_ref = x.detach().clone().requires_grad_(True)
    reference(x_ref).square().sum().backward()
    torch.testing.assert_close(expected_weight, reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)
    torch.testing.assert_close(x.grad, x_ref.grad)

    kept = layer.weight.grad  # a caller keeps the gradient: it must survive the next step
    pointer = kept.data_ptr()  # type: ignore[union-attr]
    layer.zero_grad(set_to_none=True)
    layer(x).square().sum().backward()
    assert layer.weight.grad.data_ptr() != pointer  # type: ignore[union-attr]
    torch.testing.assert_close(kept, expected_weight)
    del kept
    # Nothing refers to the kept storage now but the buffer: the step after reuses it.
    pointer = layer.weight.grad.data_ptr()  # type: ignore[union-attr]
    layer.zero_grad(set_to_none=True)
    layer(x).square().sum().backward()
    assert layer.weight.grad.data_ptr() == pointer  # type: ignore[union-attr]
    torch.testing.assert_close(layer.weight.grad, expected_weight)


def test_linear_gradients_accumulate_without_zero_grad() -> None:
    torch.manual_seed(1)
    layer = Linear(4, 3)
    first, second = torch.randn(5, 4), torch.randn(5, 4)
    layer(first).sum().backward()
    layer(second).sum().backward()  # must add to, not overwrite, the first gradient
    expected = torch.ones(5, 3).t() @ (first + second)
    torch.testing.assert_close(layer.weight.grad, expected)


def test_embedding_gradient_is_dense_and_skips_the_padding_row() -> None:
    torch.manual_seed(2)
    table = Embedding(10, 3, padding_idx=0)
    reference = torch.nn.Embedding(10, 3, padding_idx=0)
    reference.load_state_dict(table.state_dict())
    ids = torch.tensor([[0, 3, 3, 7], [1, 0, 7, 9]])
    upstream = torch.randn(2, 4, 3)
    for _ in range(2):  # the second step reuses (and must re-zero) the storage
        table.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
        (table(ids) * upstream).sum().backward()
        (reference(ids) * upstream).sum().backward()
        torch.testing.assert_close(table.weight.grad, reference.weight.grad)
        assert table.weight.grad[0].abs().sum() == 0  # type: ignore[index]
        ids = torch.tensor([[2, 2, 5, 0], [4, 4, 4, 8]])


def test_embedding_gradient_rezeroes_only_what_it_can_trust() -> None:
    """The next step zeroes only the rows the last one wrote — unless the gradient was changed
    in place meanwhile, or the ids tensor was refilled; the gradient is right every time."""
    torch.manual_seed(3)
    table = Embedding(50, 4)
    reference = torch.nn.Embedding(50, 4)
    reference.load_state_dict(table.state_dict())
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    addresses = set()
    for step in range(5):
        table.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
        upstream = torch.randn(2, 3, 4)
        (table(ids) * upstream).sum().backward()
        (reference(ids) * upstream).sum().backward()
        grad = table.weight.grad
        assert grad is not None
        torch.testing.assert_close(grad, reference.weight.grad)
        addresses.add(grad.data_ptr())
        if step == 1:
            grad.add_(1.0)  # every row nonzero: the next step must zero the whole table
        del grad
        ids[0, 0] = 10 + step  # the caller refills its ids tensor in place
        ids[1] = torch.randint(0, 50, (3,))
    assert len(addresses) == 1  # one storage throughout: rows re-zeroed, not a fresh table


def _packed_reference(
    projected: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, heads: int
) -> torch.Tensor:
    def split(t: torch.Tensor, part: int) -> torch.Tensor:
        b, length, width = t.shape
        w = width // 3
        return t[..., part * w : (part + 1) * w].reshape(b, length, heads, -1).transpose(1, 2)

    query, key, value = split(projected, 0), split(memory, 1), split(memory, 2)
    scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5 + mask
    context = torch.softmax(scores, dim=-1) @ value
    return context.transpose(1, 2).reshape(projected.shape[0], projected.shape[1], -1)


@pytest.mark.parametrize("cross", [False, True])
def test_packed_attention_matches_the_plain_computation(cross: bool) -> None:
    torch.manual_seed(3)
    heads = 2
    a = torch.randn(3, 5, 3 * 8, requires_grad=True)
    b = torch.randn(3, 7, 3 * 8, requires_grad=True)
    mask_a = additive_mask(torch.tensor([[1] * 5, [1, 1, 1, 0, 0], [1] * 5]), torch.float32)
    mask_b = additive_mask(torch.tensor([[1] * 7, [1] * 7, [1, 1, 0, 0, 0, 0, 0]]), torch.float32)
    # Dropout p=0 here (the mask's randomness is tested with the model below).
    if cross:
        problems = (PackedProblem(1, 0, mask_a, 0.0), PackedProblem(0, 1, mask_b, 0.0))
        outputs = attend_packed((a, b), problems, heads)
        expected = (
            _packed_reference(b, a, mask_a, heads),
            _packed_reference(a, b, mask_b, heads),
        )
    else:
        outputs = attend_packed((a,), (PackedProblem(0, 0, mask_a, 0.0),), heads)
        expected = (_packed_reference(a, a, mask_a, heads),)
    upstream = [torch.randn_like(o) for o in outputs]
    grads = torch.autograd.grad(outputs, (a, b) if cross else (a,), upstream)
    expected_grads = torch.autograd.grad(expected, (a, b) if cross else (a,), upstream)
    for got, want in zip((*outputs, *grads), (*expected, *expected_grads), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="read by more than one"):
        attend_packed((a,), (PackedProblem(0, 0, mask_a, 0.0),) * 2, heads)


@pytest.mark.parametrize("cross", [False, True])
def test_packed_attention_adds_the_projection_biases(cross: bool) -> None:
    """Projections without their bias plus `biases` equal the biased projections, and the
    biases get the summed gradients."""
    torch.manual_seed(4)
    heads = 2
    a = torch.randn(3, 5, 3 * 8, requires_grad=True)
    b = torch.randn(3, 7, 3 * 8, requires_grad=True)
    bias_a = torch.randn(3 * 8, requires_grad=True)
    bias_b = torch.randn(3 * 8, requires_grad=True)
    mask_a = additive_mask(torch.tensor([[1] * 5, [1, 1, 1, 0, 0], [1] * 5]), torch.float32)
    mask_b = additive_mask(torch.ones(3, 7), torch.float32)
    if cross:
        problems = (PackedProblem(1, 0, mask_a, 0.0), PackedProblem(0, 1, mask_b, 0.0))
        packed, biases = (a, b), (bias_a, bias_b)
    else:
        problems, packed, biases = (PackedProblem(0, 0, mask_a, 0.0),), (a,), (bias_a,)
    outputs = attend_packed(packed, problems, heads, biases=biases)
    expected = attend_packed(
        tuple(p + q for p, q in zip(packed, biases, strict=True)), problems, heads
    )
    upstream = [torch.randn_like(o) for o in outputs]
    leaves = (*packed, *biases)
    grads = torch.autograd.grad(outputs, leaves, upstream)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    for got, want in zip((*outputs, *grads), (*expected, *expected_grads), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="biases"):
        attend_packed(packed, problems, heads, biases=(*biases, bias_a))


def test_packed_attention_reuses_its_storage_only_when_free() -> None:
    torch.manual_seed(8)
    a = torch.randn(2, 6, 3 * 8, requires_grad=True)
    mask = additive_mask(torch.ones(2, 6), torch.float32)
    problem = (PackedProblem(0, 0, mask, 0.1),)
    memory = AttentionMemory()

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)
        (context,) = attend_packed((a,), problem, 2, memory)
        (grad,) = torch.autograd.grad(context, a, torch.ones_like(context))
        return context, grad

    first, first_grad = step()
    kept, kept_grad = first.detach().clone(), first_grad.clone()
    second, second_grad = step()  # `first` is still referenced: written elsewhere
    assert second.data_ptr() != first.data_ptr()
    assert second_grad.data_ptr() != first_grad.data_ptr()
    torch.testing.assert_close(first, kept, rtol=0, atol=0)
    torch.testing.assert_close(second, kept, rtol=0, atol=0)
    torch.testing.assert_close(second_grad, kept_grad, rtol=0, atol=0)
    pointers = second.data_ptr(), second_grad.data_ptr()
    del first, first_grad, second, second_grad
    third, third_grad = step()  # nothing refers to the kept blocks now: reused, same values
    assert (third.data_ptr(), third_grad.data_ptr()) == pointers
    torch.testing.assert_close(third, kept, rtol=0, atol=0)
    torch.testing.assert_close(third_grad, kept_grad, rtol=0, atol=0)


def _train_step(
    model: MultiTaskViLBERT,
    inputs: ViLBERTInputs,
    task: str,
    fast: bool,
    bf16: bool = False,
    attention_kernel: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout draws on both paths
    off = (lambda *_args: False) if not fast else None
    library = packed_attention._attention_library if attention_kernel else (lambda: None)
    with (
        mock.patch.object(packed_attention, "_attention_library", library),
        mock.patch.object(
            layers, "packed_attention_applies", off or layers.packed_attention_applies
        ),
        mock.patch.object(reused_memory, "reuse_applies", off or reused_memory.reuse_applies),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
    ):
        logits = model.train()(inputs, task).logits.float()
        F.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)).backward()
    return logits.detach(), _grads(model)


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("task", ["vqa", "refcoco"])
def test_fast_training_step_equals_the_stock_step(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
    task: str,
    bf16: bool,
) -> None:
    """In float32 the fast paths give the stock values up to rounding order; under bf16
    autocast the linear layers compute what autocast's casts compute (same bf16 products,
    gradients cast back to float32), in reused storage: bit-identical at these sizes, where
    the weight gradients' product from a contiguous Gᵀ sums in the same order (larger
    products may differ in the last bit, `test_cpu_kernels`). The attention kernel, which
    computes bf16 attention in float32, is off for that comparison (`test_cpu_kernels`
    compares it)."""
    model = MultiTaskViLBERT(tiny_config)
    randomized(model, std=0.1)
    inputs = make_inputs(tiny_config)
    exact = {"atol": 0.0, "rtol": 0.0}
    logit_tolerance = exact if bf16 else {"atol": 1e-5, "rtol": 1e-5}
    grad_tolerance = exact if bf16 else {"atol": 1e-5, "rtol": 1e-4}
    stock_logits, stock = _train_step(model, inputs, task, fast=False, bf16=bf16)
    for _ in range(2):  # the second fast step runs on reused storage
        logits, fast = _train_step(
            model, inputs, task, fast=True, bf16=bf16, attention_kernel=not bf16
        )
        torch.testing.assert_close(logits, stock_logits, **logit_tolerance)
        assert fast.keys() == stock.keys()
        for name, grad in stock.items():
            assert fast[name].dtype == torch.float32, name
            torch.testing.assert_close(fast[name], grad, **grad_tolerance, msg=name)
    if bf16:
        kept = [m.memory.cast_weight._block for m in model.modules() if isinstance(m, Linear)]
        assert any(block is not None and block.dtype == torch.bfloat16 for block in kept)


def test_linear_output_a_caller_keeps_is_not_overwritten() -> None:
    torch.manual_seed(4)
    layer = Linear(4, 3)
    first_input, second_input = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    first = layer(first_input)
    first.sum().backward()
    expected = F.linear(first_input, layer.weight, layer.bias).detach()
    pointer = first.data_ptr()
    second = layer(second_input)  # `first` is still referenced: fresh memory
    assert second.data_ptr() != pointer
    torch.testing.assert_close(first.detach(), expected)
    torch.testing.assert_close(second, F.linear(second_input, layer.weight, layer.bias))
    del first
    third = layer(first_input)  # the kept block is free again (grown to the largest request)
    torch.testing.assert_close(third, F.linear(first_input, layer.weight, layer.bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_in_kept_storage_equals_stock_gelu(dtype: torch.dtype) -> None:
    torch.manual_seed(6)
    x = torch.randn(3, 5, 16, dtype=dtype, requires_grad=True)
    upstream = torch.randn(3, 5, 16, dtype=dtype)
    (expected_grad,) = torch.autograd.grad(F.gelu(x), x, upstream)
    memory = GeluMemory()
    outputs = []
    for _ in range(3):
        out = gelu(x, memory)
        (grad,) = torch.autograd.grad(out, x, upstream)
        torch.testing.assert_close(out, F.gelu(x), rtol=0, atol=0)
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)
        outputs.append(out.detach())
    # Every output was still referenced, so none was overwritten by the next call.
    assert len({o.data_ptr() for o in outputs}) == 3
    for out in outputs:
        torch.testing.assert_close(out, F.gelu(x).detach(), rtol=0, atol=0)
    pointer = outputs[-1].data_ptr()
    del out
    outputs.clear()
    assert gelu(x, memory).data_ptr() == pointer  # free again: reused
    with torch.no_grad():
        assert gelu(x, memory).data_ptr() != pointer  # no gradients: stock F.gelu


def test_eval_frees_the_memory_kept_for_training(
    tiny_config: ViLBERTConfig, make_inputs: Callable[..., ViLBERTInputs]
) -> None:
    model = MultiTaskViLBERT(tiny_config).train()
    model(make_inputs(tiny_config, batch=2, length=5, regions=4), "vqa").logits.sum().backward()
    layers_kept = [
        m for m in model.modules() if isinstance(m, Linear) and m.memory.output._block is not None
    ]
    assert layers_kept  # the training step kept blocks for the next one
    kinds = ResidualNormMemory | GeluMemory | AttentionMemory
    other_storages = [
        storage
        for m in model.modules()
        for value in vars(m).values()
        if isinstance(value, kinds)
        for storage in value.training_storages()
    ]
    # The fused norms (when their kernel builds), GeLUs and attentions kept blocks too.
    assert sum(storage._block is not None for storage in other_storages) > 10
    model.eval()
    assert all(
        storage._block is None
        for m in model.modules()
        if isinstance(m, Linear)
        for storage in (m.memory.output, m.memory.input_grad, m.memory.weight_grad)
    )
    assert model.bert.embeddings.word_embeddings.grad_memory.storage._block is None
    assert all(storage._block is None for storage in other_storages)
