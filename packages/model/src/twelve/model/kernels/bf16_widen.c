/* bfloat16 → float32 widening with streaming (non-temporal) stores, for weight gradients.
 *
 * Compiled and loaded by twelve/model/cpu_kernels.py; called through ctypes from
 * twelve/model/reused_memory.py. Under autocast a weight gradient is computed in bfloat16 and
 * widened into the float32 `.grad` that only the optimizer reads, well after backward: plain
 * stores first read each destination line into the cache (it is cold by then) and evict the
 * activations backward still needs; streaming stores write around the cache. Widening is
 * exact (the bits shifted up), so the values are those of `Tensor.copy_`. Without AVX-512 the
 * plain loop runs.
 */
#include <stdint.h>
#include <omp.h>

#include "bf16.h"

void twelve_widen_bf16(const uint16_t *src, float *dst, int64_t n, int threads) {
#if defined(__AVX512F__)
    /* Elements before dst reaches a 64-byte boundary, then blocks of 16, then the tail. */
    int64_t head = (int64_t)(((64 - ((uintptr_t)dst & 63)) & 63) / sizeof(float));
    if (((uintptr_t)dst & (sizeof(float) - 1)) != 0 || head > n) head = n;
    for (int64_t i = 0; i < head; i++) dst[i] = bf16_to_float(src[i]);
    const int64_t blocks = (n - head) / 16;
    const uint16_t *s = src + head;
    float *d = dst + head;
    _Pragma("omp parallel num_threads(threads)")
    {
        _Pragma("omp for schedule(static) nowait")
        for (int64_t b = 0; b < blocks; b++) {
            __m256i half = _mm256_loadu_si256((const __m256i *)(s + b * 16));
            _mm512_stream_ps(d + b * 16, bf16x16_to_float(half));
        }
        _mm_sfence(); /* each thread's streaming stores are visible before the barrier */
    }
    for (int64_t i = head + blocks * 16; i < n; i++) dst[i] = bf16_to_float(src[i]);
#else
    _Pragma("omp parallel for simd schedule(static) num_threads(threads)")
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(src[i]);
#endif
}
