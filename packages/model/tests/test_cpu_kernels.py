"""The C kernels (the fused residual norm) and their loader.

The kernel must give the torch computation's values up to float rounding, with the same dropout
masks for the same seed, in float32 and with a bfloat16 `x` (CPU autocast); the loader must
build once, cache, never leave a half-written library, and fall back to the torch ops (saying
why) whenever the kernel cannot be used.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import platform
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

import twelve.model.packed_attention as packed_attention
import twelve.model.residual_norm as residual_norm
from twelve.model import cpu_kernels, layers, reused_memory
from twelve.model import dropout as dropout_module
from twelve.model.attention import additive_mask
from twelve.model.config import ViLBERTConfig
from twelve.model.dropout import dropout_add
from twelve.model.inputs import ViLBERTInputs
from twelve.model.model import MultiTaskViLBERT
from twelve.model.residual_norm import ResidualNormMemory
from twelve.model.reused_memory import Linear

needs_kernels = pytest.mark.skipif(
    cpu_kernels.unavailable_reason() is not None,
    reason=f"CPU kernels unavailable: {cpu_kernels.unavailable_reason()}",
)


@pytest.fixture
def fresh_loader() -> Iterator[None]:
    """Forget loaded kernels before and after the test (the loader caches per process)."""
    caches = (
        cpu_kernels.load,
        residual_norm._library,
        dropout_module._library,
        reused_memory._widen_library,
        reused_memory._transpose_library,
        packed_attention._attention_library,
    )
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


def _norm(width: int) -> nn.LayerNorm:
    norm = nn.LayerNorm(width, eps=1e-12)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.2)
        norm.bias.normal_(0.0, 0.2)
    return norm


def _run(
    fused: bool, x: torch.Tensor, residual: torch.Tensor, norm: nn.LayerNorm, p: float
) -> tuple[torch.Tensor, ...]:
    """Output and the gradients of x, residual, weight and bias, for one seeded step."""
    x = x.detach().clone().requires_grad_(True)
    residual = residual.detach().clone().requires_grad_(True)
    norm.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    if fused:
        out = residual_norm.residual_layer_norm(x, residual, norm, p, training=True)
    else:
        out = norm(dropout_add(x, residual, p, training=True))
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    out.backward(upstream)
    assert x.grad is not None
    assert residual.grad is not None
    assert norm.weight.grad is not None
    assert norm.bias.grad is not None
    return out.detach(), x.grad, residual.grad, norm.weight.grad, norm.bias.grad


@needs_kernels
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("shape", [(3, 7, 48), (2, 101, 1024), (5, 33)])
def test_fused_equals_the_eager_ops_in_float32(p: float, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x, residual, norm = torch.randn(shape), torch.randn(shape), _norm(shape[-1])
    fused = _run(True, x, residual, norm, p)
    eager = _run(False, x, residual, norm, p)
    assert fused[0].dtype == fused[1].dtype == torch.float32
    for got, want in zip(fused, eager, strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    # The same elements are dropped: exactly where the eager gradient of x is zero.
    assert torch.equal(fused[1] == 0, eager[1] == 0)
    if p > 0.0:
        assert (eager[1] == 0).any()


@needs_kernels
@pytest.mark.parametrize("p", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(2, 101, 64), (5, 33)])
def test_the_kernel_adds_the_projection_bias_and_sums_its_gradient(
    p: float, shape: tuple[int, ...]
) -> None:
    """`residual_output` (bias folded into the kernel) equals `norm(residual + dropout(dense(h)))`
    with stock ops, gradients of the input, the dense layer, the residual and the norm too."""
    torch.manual_seed(0)
    width = shape[-1]
    hidden, residual = torch.randn(*shape[:-1], 24), torch.randn(shape)
    dense, norm = Linear(24, width), _norm(width)
    with torch.no_grad():
        dense.bias.normal_(0.0, 0.5)
    results = []
    for fused in (True, False):
        h = hidden.clone().requires_grad_(True)
        r = residual.clone().requires_grad_(True)
        for module in (dense, norm):
            module.zero_grad(set_to_none=True)
        torch.manual_seed(11)
        if fused:
            out = residual_norm.residual_output(h, dense, r, norm, p, training=True)
            inputs = [getattr(f, "variable", None) for f, _ in out.grad_fn.next_functions]
            assert any(t is dense.bias for t in inputs)  # the kernel took the bias
        else:
            projected = F.linear(h, dense.weight, dense.bias)
            out = norm(dropout_add(projected, r, p, training=True))
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5)))
        grads = (h.grad, r.grad, dense.weight.grad, dense.bias.grad, norm.weight.grad)
        results.append((out.detach(), *grads, norm.bias.grad))
    for got, want in zip(*results, strict=True):
        assert got is not None
        assert want is not None
        torch.testing.assert_close(got, want, atol=3e-5, rtol=1e-5)


@needs_kernels
def test_fused_with_a_bf16_projection_matches_autocast() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 9, 64).to(torch.bfloat16)
    residual, norm = torch.randn(4, 9, 64), _norm(64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _run(True, x, residual, norm, 0.1)
        eager = _run(False, x, residual, norm, 0.1)
    assert fused[0].dtype == torch.float32
    assert fused[1].dtype == torch.bfloat16
    torch.testing.assert_close(fused[0], eager[0], atol=2e-5, rtol=1e-5)
    # x's gradient is rounded to bf16 from float32 values that differ by float rounding.
    torch.testing.assert_close(fused[1], eager[1], atol=1e-2, rtol=1e-2)
    assert torch.equal(fused[1] == 0, eager[1] == 0)
    for got, want in zip(fused[2:], eager[2:], strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@needs_kernels
def test_fused_on_a_bf16_stream_matches_autocast() -> None:
    """Under autocast a norm of bf16 input gives bf16: the vision stream's residuals, sums,
    outputs and their gradients are all bf16, rounded where the eager ops round (so equal to
    the eager values here). The weight and bias gradients are float32 sums; ATen's eager
    bf16 LayerNorm backward rounds them at bf16 resolution, so they are checked against a
    float32 computation from the same bf16 values instead."""
    torch.manual_seed(2)
    x = torch.randn(4, 9, 64).to(torch.bfloat16)
    residual, norm = torch.randn(4, 9, 64).to(torch.bfloat16), _norm(64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _run(True, x, residual, norm, 0.0)
        eager = _run(False, x, residual, norm, 0.0)
        dropped = _run(True, x, residual, norm, 0.5), _run(False, x, residual, norm, 0.5)
    assert [t.dtype for t in fused] == [t.dtype for t in eager]
    assert fused[0].dtype == fused[1].dtype == fused[2].dtype == torch.bfloat16
    bf16_ulp = {"atol": 1e-2, "rtol": 1e-2}  # one bf16 rounding apart at most
    for got, want in zip(fused[:3], eager[:3], strict=True):
        torch.testing.assert_close(got, want, **bf16_ulp)
    for got, want in zip(dropped[0][:3], dropped[1][:3], strict=True):
        torch.testing.assert_close(got, want, **bf16_ulp)
    assert torch.equal(dropped[0][1] == 0, dropped[1][1] == 0)
    total = (x.float() + residual.float()).bfloat16().float()
    mean, var = total.mean(-1, keepdim=True), total.var(-1, unbiased=False, keepdim=True)
    upstream = torch.randn(total.shape, generator=torch.Generator().manual_seed(5))
    upstream = upstream.bfloat16().float()
    expected_weight = (upstream * (total - mean) / torch.sqrt(var + 1e-12)).sum((0, 1))
    torch.testing.assert_close(fused[3], expected_weight, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused[4], upstream.sum((0, 1)), atol=1e-4, rtol=1e-4)


@needs_kernels
def test_fused_path_is_taken_only_for_training_with_gradients() -> None:
    x, residual, norm = torch.randn(2, 3, 8), torch.randn(2, 3, 8), _norm(8)
    x.requires_grad_(True)
    out = residual_norm.residual_layer_norm(x, residual, norm, 0.1, training=True)
    assert type(out.grad_fn).__name__ == "_ResidualNormBackward"
    with torch.no_grad():
        plain = residual_norm.residual_layer_norm(x, residual, norm, 0.1, training=False)
    torch.testing.assert_close(plain, norm(x + residual), rtol=0, atol=0)
    assert not residual_norm.fused_applies(x.double(), residual.double(), norm)
    # A float32 projection onto a bf16 stream is not a pair autocast makes: eager ops.
    assert not residual_norm.fused_applies(x, residual.bfloat16(), norm)
    assert not residual_norm.fused_applies(x, residual[:, :2], norm)


@needs_kernels
def test_memory_is_reused_only_when_nothing_refers_to_it() -> None:
    torch.manual_seed(2)
    x, residual, norm = torch.randn(3, 4, 16), torch.randn(3, 4, 16), _norm(16)
    x.requires_grad_(True)
    memory = ResidualNormMemory()

    def step() -> torch.Tensor:
        out = residual_norm.residual_layer_norm(x, residual, norm, 0.0, True, memory)
        out.backward(torch.ones_like(out))
        return out.detach()

    expected = norm(x + residual).detach()
    first = step()
    kept = first.clone()
    second = step()  # `first` is still referenced: fresh memory, `first` untouched
    assert second.data_ptr() != first.data_ptr()
    torch.testing.assert_close(first, kept, rtol=0, atol=0)
    pointer = second.data_ptr()
    del first, second
    third = step()  # the kept block is free again
    assert third.data_ptr() == pointer
    torch.testing.assert_close(third, expected, atol=2e-5, rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
def test_model_training_step_with_the_kernel_equals_the_eager_step(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
    bf16: bool,
) -> None:
    model = MultiTaskViLBERT(tiny_config)
    randomized(model, std=0.1)
    inputs = make_inputs(tiny_config)

    kernel_calls = []
    real_apply = residual_norm._ResidualNorm.apply

    def counted_apply(*args: object) -> torch.Tensor:
        kernel_calls.append(1)
        return real_apply(*args)

    def step(fused: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        kernel_calls.clear()
        library = residual_norm._library if fused else (lambda: None)
        with (
            mock.patch.object(residual_norm, "_library", library),
            mock.patch.object(residual_norm._ResidualNorm, "apply", counted_apply),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
        ):
            logits = model.train()(inputs, "vqa").logits.float()
            F.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)).backward()
        assert bool(kernel_calls) == fused  # the eager step really ran no kernel
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logits.detach(), grads

    eager_logits, eager = step(fused=False)
    logits, fused = step(fused=True)
    # bf16 products downstream of the norms turn float rounding into bf16 rounding.
    tolerance = {"atol": 2e-2, "rtol": 2e-2} if bf16 else {"atol": 1e-5, "rtol": 1e-4}
    torch.testing.assert_close(logits, eager_logits, **tolerance)
    assert fused.keys() == eager.keys()
    for name, grad in eager.items():
        torch.testing.assert_close(fused[name], grad, **tolerance, msg=name)


@needs_kernels
def test_one_openmp_runtime_in_the_process(fresh_loader: None) -> None:
    assert cpu_kernels.load("residual_norm") is not None
    maps = Path("/proc/self/maps").read_text().splitlines()
    runtimes = {line.split()[-1] for line in maps if re.search(r"lib(g|i)?omp[^/]*\.so", line)}
    assert len(runtimes) == 1, runtimes


@needs_kernels
def test_build_is_cached_and_keyed_by_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiler = cpu_kernels.find_compiler()
    assert compiler is not None
    first = cpu_kernels.build("residual_norm", compiler, tmp_path)
    built_at = first.stat().st_mtime_ns
    assert cpu_kernels.build("residual_norm", compiler, tmp_path) == first
    assert first.stat().st_mtime_ns == built_at
    sources = tmp_path / "sources"
    sources.mkdir()
    for header in cpu_kernels.SOURCES.glob("*.h"):
        (sources / header.name).write_text(header.read_text())
    changed = (cpu_kernels.SOURCES / "residual_norm.c").read_text() + "\n/* changed */\n"
    (sources / "residual_norm.c").write_text(changed)
    monkeypatch.setattr(cpu_kernels, "SOURCES", sources)
    second = cpu_kernels.build("residual_norm", compiler, tmp_path)
    assert second != first
    header = sources / "dropout_lanes.h"
    header.write_text(header.read_text() + "\n/* changed */\n")
    assert cpu_kernels.build("residual_norm", compiler, tmp_path) not in (first, second)


@needs_kernels
def test_a_failed_build_names_the_source_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "broken.c").write_text("int f(void) { return missing; }\n")
    monkeypatch.setattr(cpu_kernels, "SOURCES", sources)
    cache = tmp_path / "cache"
    compiler = cpu_kernels.find_compiler()
    assert compiler is not None
    with pytest.raises(cpu_kernels.KernelBuildError, match=r"(?s)broken\.c.*missing"):
        cpu_kernels.build("broken", compiler, cache)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("TWELVE_CPU_KERNELS", "0", "TWELVE_CPU_KERNELS turns them off"),
        ("CC", "/nonexistent/cc", "no C compiler found"),
    ],
)
def test_unavailable_kernels_fall_back_to_the_eager_ops(
    fresh_loader: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str,
    reason: str,
) -> None:
    monkeypatch.delenv(cpu_kernels.DISABLE_VARIABLE, raising=False)
    monkeypatch.setenv(variable, value)
    assert reason in (cpu_kernels.unavailable_reason() or "")
    with caplog.at_level(logging.INFO, logger="twelve.model.cpu_kernels"):
        x, residual, norm = torch.randn(2, 5, 16), torch.randn(2, 5, 16), _norm(16)
        x.requires_grad_(True)
        torch.manual_seed(3)
        out = residual_norm.residual_layer_norm(x, residual, norm, 0.1, training=True)
        torch.manual_seed(3)
        expected = norm(dropout_add(x, residual, 0.1, training=True))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert type(out.grad_fn).__name__ != "_ResidualNormBackward"
    assert reason in caplog.text


@needs_kernels
@pytest.mark.parametrize("count", [1, 15, 16, 1000, 4099])
@pytest.mark.parametrize("offset", [0, 1, 5])
def test_bf16_widening_equals_copy(count: int, offset: int) -> None:
    """The streaming-store widening writes the bits `copy_` writes: specials, denormals, a
    destination off the 64-byte boundary, sizes around the 16-element blocks."""
    specials = torch.tensor(
        [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40, -1e-40, 3.0e38]
    )
    values = torch.cat([specials, torch.randn(count)])[:count].to(torch.bfloat16)
    target = torch.full((count + offset,), 7.0)[offset:]
    assert reused_memory._widen_library() is not None
    reused_memory.widen_into(target, values)
    expected = torch.empty(count).copy_(values)
    assert torch.equal(target.view(torch.int32), expected.view(torch.int32))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("rows", "cols"), [(1, 1), (7, 5), (16, 32), (17, 33), (50, 96), (200, 70)]
)
@pytest.mark.parametrize("padded", [False, True], ids=["contiguous", "row-padded"])
def test_transpose_kernel_equals_the_transposed_copy(
    dtype: torch.dtype, rows: int, cols: int, padded: bool
) -> None:
    """The 16-bit transpose writes `rows.t()`'s bits, contiguous, into the given storage: edge
    tiles on both sides of the 16×16 register tiles, and a source whose rows are further apart
    than its width. A float32 matrix gets the transposed view itself."""
    torch.manual_seed(rows * cols)
    source = torch.randn(rows, cols + (3 if padded else 0)).to(dtype)[:, :cols]
    assert reused_memory._transpose_library() is not None
    result, sums = reused_memory.transposed(source, reused_memory.ReusedStorage(), True)
    assert result.is_contiguous()
    assert result.shape == (cols, rows)
    assert torch.equal(result.view(torch.int16), source.t().contiguous().view(torch.int16))
    if dtype == torch.bfloat16:  # the column sums, float32 (float16 gets none)
        assert sums is not None
        assert sums.dtype == torch.float32
        torch.testing.assert_close(sums, source.float().sum(0), rtol=1e-5, atol=1e-5)
    else:
        assert sums is None
    float_rows = torch.randn(rows, cols)
    view, no_sums = reused_memory.transposed(float_rows, reused_memory.ReusedStorage(), True)
    assert view.data_ptr() == float_rows.data_ptr()
    assert no_sums is None


@needs_kernels
def test_bf16_weight_gradient_is_the_product_with_the_transposed_output_gradient() -> None:
    """Under bf16 autocast a linear layer's weight gradient is Gᵀ·X from the kernel's
    contiguous Gᵀ, written into the block of the layer's output (free once its readers have
    run backward): the product with G's transposed view up to summation order. The bias
    gradient is the kernel's column sums of G, rounded to bf16 as `G.sum(0)` is."""
    torch.manual_seed(8)
    layer = Linear(48, 80)
    x = torch.randn(3, 70, 48, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    upstream = torch.randn(out.shape)
    output_block = out.data_ptr()
    loss = (out.float() * upstream).sum()
    del out  # only the layer's memory refers to its output block now
    original = reused_memory.transposed
    scratch: list[torch.Tensor] = []

    def spy(
        rows: torch.Tensor, storage: reused_memory.ReusedStorage, column_sums: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        result = original(rows, storage, column_sums)
        scratch.append(result[0])
        return result

    with mock.patch.object(reused_memory, "transposed", spy):
        loss.backward()
    assert len(scratch) == 1
    assert scratch[0].is_contiguous()
    assert scratch[0].data_ptr() == output_block
    grad = upstream.reshape(-1, 80).to(torch.bfloat16).float()
    inputs = x.detach().reshape(-1, 48).to(torch.bfloat16).float()
    expected = (grad.t() @ inputs).to(torch.bfloat16).float()
    assert layer.weight.grad is not None
    torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-2, atol=1e-2)
    assert layer.bias.grad is not None  # from the kernel's column sums, rounded to bf16
    expected_bias = grad.sum(0).to(torch.bfloat16).float()
    torch.testing.assert_close(layer.bias.grad, expected_bias, rtol=1e-2, atol=1e-2)


def _transformer_layer(seed: int) -> layers.TransformerLayer:
    torch.manual_seed(seed)
    layer = layers.TransformerLayer(16, 2, 24, attn_dropout=0.1, dropout=0.1, eps=1e-12)
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            parameter.normal_(1.0 if "LayerNorm.weight" in name else 0.0, 0.1)
    return layer


def _layer_step(
    layer: nn.Module,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    handoffs: bool,
    need_weights: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """One seeded forward + backward of a TransformerLayer: its output, the gradients (the
    input's under "input") and the names of the ATen ops backward ran."""
    layer.zero_grad(set_to_none=True)
    source = hidden.detach().clone().requires_grad_(True)
    patch = (  # without handoffs the layer gets None where it made one: autograd sums
        contextlib.nullcontext()
        if handoffs
        else mock.patch.object(layers, "ResidualHandoff", return_value=None)
    )
    torch.manual_seed(3)
    with patch:
        # A non-leaf input, as in the model.
        out, _ = layer.train()(source * 1.0, mask, need_weights=need_weights)
    with torch.profiler.profile() as profile:
        out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    grads["input"] = source.grad.clone()
    return out.detach(), grads, [event.name for event in profile.events()]


@needs_kernels
@pytest.mark.parametrize("need_weights", [False, True], ids=["packed", "explicit-attention"])
def test_residual_handoff_replaces_autograd_summing_the_residual_gradients(
    need_weights: bool,
) -> None:
    layer = _transformer_layer(0)
    hidden, mask = torch.randn(3, 5, 16), torch.zeros(3, 1, 1, 5)
    out, grads, ops = _layer_step(layer, hidden, mask, True, need_weights)
    stock_out, stock_grads, stock_ops = _layer_step(layer, hidden, mask, False, need_weights)
    torch.testing.assert_close(out, stock_out, atol=0.0, rtol=0.0)
    assert grads.keys() == stock_grads.keys()
    for name, grad in stock_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # Both residual sites (attention and feed-forward) sum in the input-gradient GEMM.
    assert stock_ops.count("aten::add") - ops.count("aten::add") == 2
    assert ops.count("aten::addmm") - stock_ops.count("aten::addmm") == 2


@needs_kernels
def test_residual_handoff_survives_partial_and_repeated_backward() -> None:
    layer = _transformer_layer(1)
    hidden, mask = torch.randn(2, 4, 16), torch.zeros(2, 1, 1, 4)
    _, stock, _ = _layer_step(layer, hidden, mask, handoffs=False)
    source = hidden.clone().requires_grad_(True)
    torch.manual_seed(3)
    out, _ = layer.train()(source * 1.0, mask)
    loss = out.square().sum()
    # Only the attention norm's weight: its residual gradient is left behind, never taken.
    norm_weight = layer.attention.output.LayerNorm.weight
    (partial,) = torch.autograd.grad(loss, [norm_weight], retain_graph=True)
    torch.testing.assert_close(
        partial, stock["attention.output.LayerNorm.weight"], atol=1e-5, rtol=1e-4
    )
    for _ in range(2):  # the full gradient, twice over the same graph
        (grad_input,) = torch.autograd.grad(loss, [source], retain_graph=True)
        torch.testing.assert_close(grad_input, stock["input"], atol=1e-5, rtol=1e-4)


def _attention_step(
    kernel: Callable[..., object] | None,
    cross: bool,
    p: float,
    head_dim: int,
    biased: bool,
    dtype: torch.dtype = torch.float32,
) -> tuple[list[torch.Tensor], int]:
    """Contexts and the packed and bias gradients of one seeded `attend_packed` call (self
    attention, or both directions of co-attention), through `kernel` (a `_kernel_for`; None:
    PyTorch's path), and how many calls the kernel served. The projections and the upstream
    gradients hold bfloat16 values, in `dtype`."""
    heads, batch, lengths = 3, 3, (23, 37)
    generator = torch.Generator().manual_seed(head_dim * 10 + int(cross))
    packed = [
        torch.randn(batch, length, 3 * heads * head_dim, generator=generator)
        .bfloat16()
        .to(dtype)
        .requires_grad_()
        for length in (lengths if cross else lengths[:1])
    ]
    biases = [torch.randn(t.shape[-1], generator=generator).requires_grad_() for t in packed]
    keep = [torch.ones(batch, length) for length in lengths]
    keep[0][1, 15:] = 0  # padded keys
    keep[1][2, 3:] = 0
    masks = [additive_mask(k, torch.float32) for k in keep]
    if cross:
        problems = (
            packed_attention.PackedProblem(0, 1, masks[1], p),
            packed_attention.PackedProblem(1, 0, masks[0], p),
        )
    else:
        problems = (packed_attention.PackedProblem(0, 0, masks[0], p),)
    served = []

    def counted(*args: object) -> object:
        library = kernel(*args) if kernel is not None else None
        served.append(library is not None)
        return library

    torch.manual_seed(21)  # the same dropout draws on both paths
    with mock.patch.object(packed_attention, "_kernel_for", counted):
        contexts = packed_attention.attend_packed(
            tuple(packed), problems, heads, biases=tuple(biases) if biased else None
        )
    upstream = [torch.randn(c.shape, generator=generator).bfloat16().to(dtype) for c in contexts]
    leaves = [*packed, *biases] if biased else packed
    grads = torch.autograd.grad(contexts, leaves, upstream)
    return [c.detach() for c in contexts] + list(grads), sum(served)


@needs_kernels
@pytest.mark.parametrize("cross", [False, True], ids=["self", "co-attention"])
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("head_dim", [8, 24, 32])
def test_attention_kernel_equals_the_torch_path(cross: bool, p: float, head_dim: int) -> None:
    """The C attention equals PyTorch's path over packed projections: contexts, and the packed
    and bias gradients, with padded keys, the same dropout draws, queries and keys not whole
    tiles, and head widths that are (32) and are not (8, 24) whole vectors."""
    library = packed_attention._attention_library()
    assert library is not None
    if not library.twelve_attention_vectorised():
        pytest.skip("the attention kernel serves AVX-512 builds only")
    for biased in (True, False):
        got, served = _attention_step(packed_attention._kernel_for, cross, p, head_dim, biased)
        want, stock = _attention_step(None, cross, p, head_dim, biased)
        assert (served, stock) == (1, 0)
        for index, (value, expected) in enumerate(zip(got, want, strict=True)):
            torch.testing.assert_close(value, expected, atol=2e-5, rtol=1e-5, msg=str(index))


@needs_kernels
@pytest.mark.skipif(platform.machine() != "x86_64", reason="-mno-avx512f is an x86 flag")
def test_attention_kernel_without_avx512_computes_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's plain build (no AVX-512: scalar products, `expf`) gives the same results
    and says it is not vectorised (the model then keeps PyTorch's path)."""
    compiler = cpu_kernels.find_compiler()
    assert compiler is not None
    monkeypatch.setattr(cpu_kernels, "FLAGS", (*cpu_kernels.FLAGS, "-mno-avx512f"))
    plain = packed_attention.with_signatures(
        ctypes.CDLL(str(cpu_kernels.build("packed_attention", compiler, tmp_path)))
    )
    assert plain.twelve_attention_vectorised() == 0
    for cross in (False, True):
        got, served = _attention_step(lambda *_: plain, cross, 0.3, 24, True)
        want, _ = _attention_step(None, cross, 0.3, 24, True)
        assert served == 1
        for index, (value, expected) in enumerate(zip(got, want, strict=True)):
            torch.testing.assert_close(value, expected, atol=2e-5, rtol=1e-5, msg=str(index))


@needs_kernels
@pytest.mark.parametrize("cross", [False, True], ids=["self", "co-attention"])
def test_attention_kernel_in_bf16_rounds_the_float32_computation(cross: bool) -> None:
    """With bfloat16 projections (CPU autocast's), the kernel widens them exactly and computes
    in float32: contexts and packed gradients are the float32 kernel's results on the same
    values, rounded to bfloat16 (to nearest even); the bias gradients are those float32 sums."""
    library = packed_attention._attention_library()
    assert library is not None
    if not library.twelve_attention_vectorised():
        pytest.skip("the attention kernel serves AVX-512 builds only")
    kernel = packed_attention._kernel_for
    got, served = _attention_step(kernel, cross, 0.3, 24, True, torch.bfloat16)
    want, _ = _attention_step(kernel, cross, 0.3, 24, True, torch.float32)
    assert served == 1
    for index, (value, expected) in enumerate(zip(got, want, strict=True)):
        if expected.dim() == 1:  # a bias gradient: float32 in both
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, expected, atol=0, rtol=0, msg=str(index))
        else:
            assert value.dtype == torch.bfloat16
            assert torch.equal(value, expected.bfloat16()), index


@needs_kernels
def test_bf16_training_step_with_the_attention_kernel_is_close_to_autocasts(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    """Under bf16 autocast the attention kernel serves the training step (its float32
    attention differs from autocast's bf16 products only at bf16 rounding)."""
    library = packed_attention._attention_library()
    assert library is not None
    if not library.twelve_attention_vectorised():
        pytest.skip("the attention kernel serves AVX-512 builds only")
    model = MultiTaskViLBERT(tiny_config)
    randomized(model, std=0.1)
    inputs = make_inputs(tiny_config)
    served = []
    real = packed_attention._kernel_for

    def counted(*args: object) -> object:
        found = real(*args)  # type: ignore[arg-type]
        served.append(found is not None)
        return found

    def step(kernel: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        served.clear()
        with (
            mock.patch.object(
                packed_attention,
                "_attention_library",
                (lambda: library) if kernel else (lambda: None),
            ),
            mock.patch.object(packed_attention, "_kernel_for", counted),
            torch.autocast("cpu", dtype=torch.bfloat16),
        ):
            logits = model.train()(inputs, "vqa").logits.float()
            F.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)).backward()
        assert bool(served) == kernel
        assert all(served)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logits.detach(), grads

    stock_logits, stock = step(kernel=False)
    logits, fast = step(kernel=True)
    torch.testing.assert_close(logits, stock_logits, atol=2e-2, rtol=2e-2)
    assert fast.keys() == stock.keys()
    for name, grad in stock.items():
        torch.testing.assert_close(fast[name], grad, atol=2e-2, rtol=2e-2, msg=name)
