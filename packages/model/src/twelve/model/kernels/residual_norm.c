/* LayerNorm(residual + dropout(x + x_bias)) over rows, forward and backward, each in one pass.
 *
 * Compiled and loaded by twelve/model/cpu_kernels.py; called through ctypes from
 * twelve/model/residual_norm.py, which documents the numerics. Rows are split across
 * `threads` OpenMP threads (the runtime PyTorch itself loaded); every loop over a row is
 * vectorised. With `dropout`, an element is dropped when its lane of the mask seeded `seed`
 * (dropout_lanes.h, drawn here row by row) is below `keep_from`; without, every element is
 * kept. `x` is float32 or, with `x_is_bf16`, bfloat16 bits; `x_bias` (float32, per column)
 * is the bias of the projection that made `x`, added here instead of by its GEMM; with
 * `stream_is_bf16` so are the residual, the sum, the output and their gradients, each value
 * rounded to bfloat16 where the eager bfloat16 ops round it. Each (x, stream) type pair is
 * its own specialised loop nest (generated below), so every loop vectorises.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>

#include "bf16.h"
#include "dropout_lanes.h"

static inline float load_float(const float *p, int64_t i) { return p[i]; }
static inline float load_bf16(const bf16 *p, int64_t i) { return bf16_to_float(p[i]); }
/* Store `v`; return the value stored (rounded for bfloat16). */
static inline float store_float(float *p, int64_t i, float v) {
    p[i] = v;
    return v;
}
static inline float store_bf16(bf16 *p, int64_t i, float v) {
    bf16 b = float_to_bf16(v);
    p[i] = b;
    return bf16_to_float(b);
}

#define FORWARD(NAME, XT, XL, ST, SL, SS)                                                      \
    static void NAME(const XT *x, const float *xb, const ST *res, int dropout, uint64_t seed,  \
                     int32_t keep_from,                                                        \
                     float scale, const float *gamma, const float *beta, float eps,            \
                     int64_t rows, int64_t cols, int threads, ST *sum, ST *y, float *mean,     \
                     float *rstd) {                                                            \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")                      \
        for (int64_t r = 0; r < rows; r++) {                                                   \
            const int64_t o = r * cols;                                                        \
            float total = 0.0f;                                                                \
            if (dropout) {                                                                     \
                uint64_t words[cols / 4 + 2];                                                  \
                const lane_t *lane = lanes_from(seed, o, cols, words);                         \
                _Pragma("omp simd reduction(+:total)")                                         \
                for (int64_t c = 0; c < cols; c++) {                                           \
                    float kept = lane[c] >= keep_from ? (XL(x, o + c) + xb[c]) * scale : 0.0f; \
                    total += SS(sum, o + c, SL(res, o + c) + kept);                            \
                }                                                                              \
            } else {                                                                           \
                _Pragma("omp simd reduction(+:total)")                                         \
                for (int64_t c = 0; c < cols; c++)                                             \
                    total += SS(sum, o + c, SL(res, o + c) + (XL(x, o + c) + xb[c]));          \
            }                                                                                  \
            const float m = total / (float)cols;                                               \
            float squares = 0.0f;                                                              \
            _Pragma("omp simd reduction(+:squares)")                                           \
            for (int64_t c = 0; c < cols; c++) {                                               \
                float d = SL(sum, o + c) - m;                                                  \
                squares += d * d;                                                              \
            }                                                                                  \
            const float inv = 1.0f / sqrtf(squares / (float)cols + eps);                       \
            _Pragma("omp simd")                                                                \
            for (int64_t c = 0; c < cols; c++)                                                 \
                SS(y, o + c, (SL(sum, o + c) - m) * inv * gamma[c] + beta[c]);                 \
            mean[r] = m;                                                                       \
            rstd[r] = inv;                                                                     \
        }                                                                                      \
    }

#define BACKWARD(NAME, XT, XS, ST, SL, SS)                                                     \
    static void NAME(const ST *dy, const ST *sum, const float *mean, const float *rstd,        \
                     const float *gamma, int dropout, uint64_t seed, int32_t keep_from, float scale, \
                     int64_t rows, int64_t cols, int threads, ST *dsum, XT *dx,                \
                     float *dgamma, float *dbeta, float *dxbias) {                             \
        _Pragma("omp parallel num_threads(threads)")                                           \
        {                                                                                      \
            const int t = omp_get_thread_num();                                                \
            float *dg = dgamma + (int64_t)t * cols, *db = dbeta + (int64_t)t * cols;           \
            float *dxb = dxbias + (int64_t)t * cols;                                           \
            for (int64_t c = 0; c < cols; c++) {                                               \
                dg[c] = 0.0f;                                                                  \
                db[c] = 0.0f;                                                                  \
                dxb[c] = 0.0f;                                                                 \
            }                                                                                  \
            _Pragma("omp for schedule(static)")                                                \
            for (int64_t r = 0; r < rows; r++) {                                               \
                const int64_t o = r * cols;                                                    \
                const float m = mean[r], inv = rstd[r];                                        \
                float a = 0.0f, b = 0.0f;                                                      \
                _Pragma("omp simd reduction(+:a, b)")                                          \
                for (int64_t c = 0; c < cols; c++) {                                           \
                    float g = SL(dy, o + c);                                                   \
                    float xhat = (SL(sum, o + c) - m) * inv;                                   \
                    float gg = g * gamma[c];                                                   \
                    a += gg;                                                                   \
                    b += gg * xhat;                                                            \
                    dg[c] += g * xhat;                                                         \
                    db[c] += g;                                                                \
                }                                                                              \
                a /= (float)cols;                                                              \
                b /= (float)cols;                                                              \
                if (dropout) {                                                                 \
                    uint64_t words[cols / 4 + 2];                                              \
                    const lane_t *lane = lanes_from(seed, o, cols, words);                     \
                    _Pragma("omp simd")                                                        \
                    for (int64_t c = 0; c < cols; c++) {                                       \
                        float xhat = (SL(sum, o + c) - m) * inv;                               \
                        float ds = SS(dsum, o + c,                                             \
                                      inv * (SL(dy, o + c) * gamma[c] - a - xhat * b));        \
                        dxb[c] += XS(dx, o + c, lane[c] >= keep_from ? ds * scale : 0.0f);     \
                    }                                                                          \
                } else {                                                                       \
                    _Pragma("omp simd")                                                        \
                    for (int64_t c = 0; c < cols; c++) {                                       \
                        float xhat = (SL(sum, o + c) - m) * inv;                               \
                        dxb[c] += XS(dx, o + c, SS(dsum, o + c,                                \
                                         inv * (SL(dy, o + c) * gamma[c] - a - xhat * b)));    \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }

FORWARD(forward_f32_f32, float, load_float, float, load_float, store_float)
FORWARD(forward_bf16_f32, bf16, load_bf16, float, load_float, store_float)
FORWARD(forward_bf16_bf16, bf16, load_bf16, bf16, load_bf16, store_bf16)
BACKWARD(backward_f32_f32, float, store_float, float, load_float, store_float)
BACKWARD(backward_bf16_f32, bf16, store_bf16, float, load_float, store_float)
BACKWARD(backward_bf16_bf16, bf16, store_bf16, bf16, load_bf16, store_bf16)

/* x_bias: float32, one per column, added to x before dropout (zeros for none). Returns 0, or
 * 1 for a type pair not built (a float32 x on a bfloat16 stream). */
int twelve_residual_norm_forward(
    const void *x, const float *x_bias, int x_is_bf16, const void *residual, int stream_is_bf16,
    int dropout, uint64_t seed, int32_t keep_from, float scale, const float *gamma,
    const float *beta, float eps, int64_t rows, int64_t cols, int threads,
    void *sum, void *y, float *mean, float *rstd) {
    if (!x_is_bf16 && !stream_is_bf16)
        forward_f32_f32(x, x_bias, residual, dropout, seed, keep_from, scale, gamma, beta, eps, rows, cols,
                        threads, sum, y, mean, rstd);
    else if (x_is_bf16 && !stream_is_bf16)
        forward_bf16_f32(x, x_bias, residual, dropout, seed, keep_from, scale, gamma, beta, eps, rows, cols,
                         threads, sum, y, mean, rstd);
    else if (x_is_bf16 && stream_is_bf16)
        forward_bf16_bf16(x, x_bias, residual, dropout, seed, keep_from, scale, gamma, beta, eps, rows, cols,
                          threads, sum, y, mean, rstd);
    else
        return 1;
    return 0;
}

/* dsum: gradient of the pre-norm sum (the residual's); dx: of x (dropped, scaled, from the
 * stored dsum). dgamma/dbeta/dx_bias: one row of float32 partial sums per thread (dx_bias:
 * of dx, the gradient of x_bias). */
int twelve_residual_norm_backward(
    const void *dy, const void *sum, int stream_is_bf16, const float *mean, const float *rstd,
    const float *gamma, int dropout, uint64_t seed, int32_t keep_from, float scale, int64_t rows,
    int64_t cols, int threads, int dx_is_bf16, void *dsum, void *dx, float *dgamma,
    float *dbeta, float *dx_bias) {
    if (!dx_is_bf16 && !stream_is_bf16)
        backward_f32_f32(dy, sum, mean, rstd, gamma, dropout, seed, keep_from, scale, rows, cols,
                         threads, dsum, dx, dgamma, dbeta, dx_bias);
    else if (dx_is_bf16 && !stream_is_bf16)
        backward_bf16_f32(dy, sum, mean, rstd, gamma, dropout, seed, keep_from, scale, rows, cols,
                          threads, dsum, dx, dgamma, dbeta, dx_bias);
    else if (dx_is_bf16 && stream_is_bf16)
        backward_bf16_bf16(dy, sum, mean, rstd, gamma, dropout, seed, keep_from, scale, rows, cols,
                           threads, dsum, dx, dgamma, dbeta, dx_bias);
    else
        return 1;
    return 0;
}
