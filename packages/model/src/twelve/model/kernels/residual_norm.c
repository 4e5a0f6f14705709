/* LayerNorm(residual + dropout(x)) over rows, forward and backward, each in one pass.
 *
 * Compiled and loaded by twelve/model/cpu_kernels.py; called through ctypes from
 * twelve/model/residual_norm.py, which documents the numerics. Rows are split across
 * `threads` OpenMP threads (the runtime PyTorch itself loaded); every loop over a row
 * is vectorised. `lanes` (int16, one per element) drop an element when below `keep_from`;
 * NULL keeps every element. `x` is float32 or, with `x_is_bf16`, bfloat16 bits.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>

static inline float bf16_to_float(uint16_t bits) {
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as c10::BFloat16; NaN stays a (quiet) NaN. */
static inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

void twelve_residual_norm_forward(
    const void *x, int x_is_bf16, const float *residual, const int16_t *lanes,
    int32_t keep_from, float scale, const float *gamma, const float *beta, float eps,
    int64_t rows, int64_t cols, int threads,
    float *sum, float *y, float *mean, float *rstd) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t o = r * cols;
        const float *res = residual + o;
        float *s = sum + o, *out = y + o;
        float total = 0.0f;
        if (x_is_bf16) {
            const uint16_t *xr = (const uint16_t *)x + o;
            if (lanes) {
                const int16_t *lr = lanes + o;
                #pragma omp simd reduction(+:total)
                for (int64_t c = 0; c < cols; c++) {
                    float v = res[c] + (lr[c] >= keep_from ? bf16_to_float(xr[c]) * scale : 0.0f);
                    s[c] = v;
                    total += v;
                }
            } else {
                #pragma omp simd reduction(+:total)
                for (int64_t c = 0; c < cols; c++) {
                    float v = res[c] + bf16_to_float(xr[c]);
                    s[c] = v;
                    total += v;
                }
            }
        } else {
            const float *xr = (const float *)x + o;
            if (lanes) {
                const int16_t *lr = lanes + o;
                #pragma omp simd reduction(+:total)
                for (int64_t c = 0; c < cols; c++) {
                    float v = res[c] + (lr[c] >= keep_from ? xr[c] * scale : 0.0f);
                    s[c] = v;
                    total += v;
                }
            } else {
                #pragma omp simd reduction(+:total)
                for (int64_t c = 0; c < cols; c++) {
                    float v = res[c] + xr[c];
                    s[c] = v;
                    total += v;
                }
            }
        }
        const float m = total / (float)cols;
        float squares = 0.0f;
        #pragma omp simd reduction(+:squares)
        for (int64_t c = 0; c < cols; c++) {
            float d = s[c] - m;
            squares += d * d;
        }
        const float inv = 1.0f / sqrtf(squares / (float)cols + eps);
        #pragma omp simd
        for (int64_t c = 0; c < cols; c++) out[c] = (s[c] - m) * inv * gamma[c] + beta[c];
        mean[r] = m;
        rstd[r] = inv;
    }
}

/* dsum: gradient of the pre-norm sum (the residual's); dx: of x (dropped, scaled; float32 or
 * bf16 bits with `dx_is_bf16`). dgamma/dbeta: one row of partial sums per thread. */
void twelve_residual_norm_backward(
    const float *dy, const float *sum, const float *mean, const float *rstd, const float *gamma,
    const int16_t *lanes, int32_t keep_from, float scale, int64_t rows, int64_t cols,
    int threads, int dx_is_bf16, float *dsum, void *dx, float *dgamma, float *dbeta) {
    #pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num();
        float *dg = dgamma + (int64_t)t * cols, *db = dbeta + (int64_t)t * cols;
        for (int64_t c = 0; c < cols; c++) {
            dg[c] = 0.0f;
            db[c] = 0.0f;
        }
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t o = r * cols;
            const float *g = dy + o, *s = sum + o;
            float *ds = dsum + o;
            const float m = mean[r], inv = rstd[r];
            float a = 0.0f, b = 0.0f;
            #pragma omp simd reduction(+:a, b)
            for (int64_t c = 0; c < cols; c++) {
                float xhat = (s[c] - m) * inv;
                float gg = g[c] * gamma[c];
                a += gg;
                b += gg * xhat;
                dg[c] += g[c] * xhat;
                db[c] += g[c];
            }
            a /= (float)cols;
            b /= (float)cols;
            #pragma omp simd
            for (int64_t c = 0; c < cols; c++) {
                float xhat = (s[c] - m) * inv;
                ds[c] = inv * (g[c] * gamma[c] - a - xhat * b);
            }
            if (dx_is_bf16) {
                uint16_t *dxr = (uint16_t *)dx + o;
                if (lanes) {
                    const int16_t *lr = lanes + o;
                    #pragma omp simd
                    for (int64_t c = 0; c < cols; c++)
                        dxr[c] = float_to_bf16(lr[c] >= keep_from ? ds[c] * scale : 0.0f);
                } else {
                    #pragma omp simd
                    for (int64_t c = 0; c < cols; c++) dxr[c] = float_to_bf16(ds[c]);
                }
            } else {
                float *dxr = (float *)dx + o;
                if (lanes) {
                    const int16_t *lr = lanes + o;
                    #pragma omp simd
                    for (int64_t c = 0; c < cols; c++)
                        dxr[c] = lr[c] >= keep_from ? ds[c] * scale : 0.0f;
                } else {
                    #pragma omp simd
                    for (int64_t c = 0; c < cols; c++) dxr[c] = ds[c];
                }
            }
        }
    }
}
