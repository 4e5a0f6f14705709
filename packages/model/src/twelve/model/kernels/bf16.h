/* bfloat16 bits ↔ float32, shared by the kernels that read or write bfloat16.
 *
 * A bfloat16 is the upper half of a float32, so widening shifts the bits up (exact) and
 * narrowing rounds to nearest even, as c10::BFloat16 does.
 */
#ifndef TWELVE_BF16_H
#define TWELVE_BF16_H

#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef uint16_t bf16;

static inline float bf16_to_float(bf16 bits) {
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as c10::BFloat16; NaN stays a (quiet) NaN. */
static inline bf16 float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

#if defined(__AVX512F__)
/* Sixteen bfloat16 values (one 256-bit load) as sixteen float32 lanes. */
static inline __m512 bf16x16_to_float(__m256i bits) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
#endif

#endif
