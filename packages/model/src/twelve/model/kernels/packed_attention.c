/* Attention with dropout straight from packed float32 Q/K/V projections, forward and backward,
 * one (batch, head) pair at a time.
 *
 * Compiled and loaded by twelve/model/cpu_kernels.py; called through ctypes from
 * twelve/model/packed_attention.py, which documents the numerics. PyTorch's path copies every
 * head operand out of the packed (B, L, 3·H·D) projections, runs batched products over all
 * heads (operands far larger than the L2 cache at 12-in-1's sizes) and passes over the scores
 * once per elementwise step. Here each OpenMP thread takes whole (batch, head) pairs: it reads
 * the pair's query, key and value rows out of the packed projections (adding the bias, scaling
 * the query), and every product, the mask, softmax and dropout of that pair then run on a few
 * hundred KiB of thread-local scratch that stays in cache. Contexts and gradients are written
 * straight into their packed places. The dropout lanes are those of dropout_lanes.h for the
 * (B·H, Lq, Lk) probabilities, drawn where they are used (backward draws them again), so the
 * masks are the ones `twelve.model.dropout.keep_scale` writes for the same seed.
 *
 * The projections, the context and their gradients are float32, or with `is_bf16` bfloat16
 * bits (CPU autocast's projections): widened exactly as they are gathered, every product,
 * softmax and sum in float32, and the results rounded to nearest even as they are written.
 *
 * The products use an AVX-512 register tile (6 rows × 32 columns, masked at the edges) when
 * the compiler targets AVX-512, else a plain loop; `twelve_attention_vectorised` says which.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "bf16.h"
#include "dropout_lanes.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* c[i·ldc + j] = alpha · Σ_p a[i·ars + p·acs] · b[p·ldb + j] for i < m, j < n. */
#if defined(__AVX512F__)
enum { TILE_ROWS = 6 };

static inline __attribute__((always_inline)) void tile(const int rows, const int vectors,
                                                       int64_t k, const float *a, int64_t ars,
                                                       int64_t acs, const float *b, int64_t ldb,
                                                       float *c, int64_t ldc, __mmask16 m0,
                                                       __mmask16 m1, float alpha) {
    __m512 c0[TILE_ROWS], c1[TILE_ROWS];
    for (int r = 0; r < rows; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        const float *ap = a + p * acs;
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * ldb);
        const __m512 b1 = vectors == 2 ? _mm512_maskz_loadu_ps(m1, b + p * ldb + 16) : b0;
        for (int r = 0; r < rows; r++) {
            const __m512 av = _mm512_set1_ps(ap[r * ars]);
            c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
            if (vectors == 2) c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
        }
    }
    const __m512 s = _mm512_set1_ps(alpha);
    for (int r = 0; r < rows; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, _mm512_mul_ps(c0[r], s));
        if (vectors == 2) _mm512_mask_storeu_ps(c + r * ldc + 16, m1, _mm512_mul_ps(c1[r], s));
    }
}

#define TILE_CASES(V)                                                                          \
    switch (rows) {                                                                            \
    case 6: tile(6, V, k, ai, ars, acs, bj, ldb, cij, ldc, m0, m1, alpha); break;              \
    case 5: tile(5, V, k, ai, ars, acs, bj, ldb, cij, ldc, m0, m1, alpha); break;              \
    case 4: tile(4, V, k, ai, ars, acs, bj, ldb, cij, ldc, m0, m1, alpha); break;              \
    case 3: tile(3, V, k, ai, ars, acs, bj, ldb, cij, ldc, m0, m1, alpha); break;              \
    case 2: tile(2, V, k, ai, ars, acs, bj, ldb, cij, ldc, m0, m1, alpha); break;              \
    default: tile(1, V, k, ai, ars, acs, bj, ldb, cij, ldc, m0, m1, alpha); break;             \
    }

static void gemm(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs,
                 const float *b, int64_t ldb, float *c, int64_t ldc, float alpha) {
    for (int64_t j = 0; j < n; j += 32) {
        const int64_t width = n - j < 32 ? n - j : 32;
        const __mmask16 m0 = width >= 16 ? 0xFFFF : (__mmask16)((1u << width) - 1u);
        const __mmask16 m1 = width <= 16   ? 0
                             : width >= 32 ? 0xFFFF
                                           : (__mmask16)((1u << (width - 16)) - 1u);
        const float *bj = b + j;
        for (int64_t i = 0; i < m; i += TILE_ROWS) {
            const int rows = m - i < TILE_ROWS ? (int)(m - i) : TILE_ROWS;
            const float *ai = a + i * ars;
            float *cij = c + i * ldc + j;
            if (width > 16) {
                TILE_CASES(2)
            } else {
                TILE_CASES(1)
            }
        }
    }
}

int twelve_attention_vectorised(void) { return 1; }
#else
static void gemm(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs,
                 const float *b, int64_t ldb, float *c, int64_t ldc, float alpha) {
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        for (int64_t j = 0; j < n; j++) ci[j] = 0.0f;
        for (int64_t p = 0; p < k; p++) {
            const float av = a[i * ars + p * acs];
            const float *bp = b + p * ldb;
            _Pragma("omp simd")
            for (int64_t j = 0; j < n; j++) ci[j] += av * bp[j];
        }
        for (int64_t j = 0; j < n; j++) ci[j] *= alpha;
    }
}

int twelve_attention_vectorised(void) { return 0; }
#endif

/* Round `count` up to a whole number of 16-float vectors. */
static inline int64_t padded(int64_t count) { return (count + 15) & ~(int64_t)15; }

static float *scratch(int64_t floats) {
    return aligned_alloc(64, (size_t)padded(floats) * sizeof(float));
}

/* Element `index` of a float32 (or, with `is_bf16`, bfloat16) array. */
static inline const void *element(const void *base, int64_t index, int is_bf16) {
    return (const char *)base + index * (is_bf16 ? 2 : 4);
}

/* rows × width of `source` (float32 or bfloat16, row stride `stride`) plus `bias` (float32,
 * may be NULL), times `scale`, into `target` (float32, row-major, row stride `width`). */
static void gather(const void *source, int is_bf16, int64_t stride, const float *bias,
                   float scale, int64_t rows, int64_t width, float *target) {
    for (int64_t i = 0; i < rows; i++) {
        float *t = target + i * width;
        if (is_bf16) {
            const bf16 *s = (const bf16 *)source + i * stride;
            _Pragma("omp simd")
            for (int64_t j = 0; j < width; j++)
                t[j] = (bf16_to_float(s[j]) + (bias ? bias[j] : 0.0f)) * scale;
        } else {
            const float *s = (const float *)source + i * stride;
            _Pragma("omp simd")
            for (int64_t j = 0; j < width; j++) t[j] = (s[j] + (bias ? bias[j] : 0.0f)) * scale;
        }
    }
}

/* rows × width of float32 `block` (row stride `ld`) rounded to bfloat16 into `target` (row
 * stride `stride`). */
static void narrow(const float *block, int64_t ld, int64_t rows, int64_t width, bf16 *target,
                   int64_t stride) {
    for (int64_t i = 0; i < rows; i++) {
        const float *b = block + i * ld;
        bf16 *t = target + i * stride;
        _Pragma("omp simd")
        for (int64_t j = 0; j < width; j++) t[j] = float_to_bf16(b[j]);
    }
}

#if defined(__AVX512F__)
/* Transpose the 16×16 block held in r[0..15] (row i in r[i]) in place. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* per 128-bit lane L, r[4g + c] then holds column 4L + c of rows 4g … 4g + 3 */
    for (int g = 0; g < 16; g += 4) {
        const __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 2]);
        const __m512d c = _mm512_castps_pd(t[g + 1]), d = _mm512_castps_pd(t[g + 3]);
        r[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int c = 0; c < 4; c++) {
        const __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44);
        const __m512 u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
        const __m512 v0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
        const __m512 v1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
        t[c] = _mm512_shuffle_f32x4(u0, v0, 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(u0, v0, 0xDD);
        t[8 + c] = _mm512_shuffle_f32x4(u1, v1, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(u1, v1, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}
#endif

/* The transpose of rows × width of `source` (float32 or bfloat16) plus `bias` (may be NULL):
 * target[j·ld + i], for ld ≥ rows rounded up to 16 (columns from rows to that bound get
 * zeros). */
static void gather_transposed(const void *source, int is_bf16, int64_t stride, const float *bias,
                              int64_t rows, int64_t width, float *target, int64_t ld) {
    int64_t j0 = 0;
#if defined(__AVX512F__)
    for (; j0 + 16 <= width; j0 += 16) {
        const __m512 b = bias ? _mm512_loadu_ps(bias + j0) : _mm512_setzero_ps();
        for (int64_t i0 = 0; i0 < rows; i0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                if (i0 + i >= rows) {
                    r[i] = _mm512_setzero_ps();
                    continue;
                }
                const void *row = element(source, (i0 + i) * stride + j0, is_bf16);
                const __m512 x = is_bf16 ? bf16x16_to_float(_mm256_loadu_si256(row))
                                         : _mm512_loadu_ps(row);
                r[i] = _mm512_add_ps(x, b);
            }
            transpose16(r);
            for (int j = 0; j < 16; j++) _mm512_storeu_ps(target + (j0 + j) * ld + i0, r[j]);
        }
    }
#endif
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = j0; j < width; j++) {
            const int64_t at = i * stride + j;
            const float x = is_bf16 ? bf16_to_float(((const bf16 *)source)[at])
                                    : ((const float *)source)[at];
            target[j * ld + i] = x + (bias ? bias[j] : 0.0f);
        }
}

#if defined(__AVX512F__)
/* exp(x) for x ≤ 0 (a score minus its row's maximum), within 1 ulp on [−87, 0]:
 * x = n·ln 2 + r with |r| ≤ ln 2 / 2, exp(r) by its Taylor polynomial to r⁷ (Horner), times 2ⁿ
 * by `scalef`. */
static inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f)); /* below, exp rounds to 0 anyway */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.98412698e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.38888889e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.33333333e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.16666667e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.66666667e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}
#endif

/* Softmax of `scores` + `mask` over `keys` columns into `probabilities`; `scores` is left
 * holding the exponentials. */
static void softmax_row(float *scores, const float *mask, float *probabilities, int64_t keys) {
#if defined(__AVX512F__)
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < keys; j += 16) {
        const __mmask16 m = tail_mask(keys - j);
        const __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, scores + j),
                                       _mm512_maskz_loadu_ps(m, mask + j));
        _mm512_mask_storeu_ps(scores + j, m, x);
        top = _mm512_mask_max_ps(top, m, top, x);
    }
    const __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 total = _mm512_setzero_ps();
    for (int64_t j = 0; j < keys; j += 16) {
        const __mmask16 m = tail_mask(keys - j);
        const __m512 x = _mm512_maskz_loadu_ps(m, scores + j);
        const __m512 e = exp_nonpositive(_mm512_sub_ps(x, shift));
        _mm512_mask_storeu_ps(scores + j, m, e);
        total = _mm512_mask_add_ps(total, m, total, e);
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
    for (int64_t j = 0; j < keys; j += 16) {
        const __mmask16 m = tail_mask(keys - j);
        _mm512_mask_storeu_ps(probabilities + j, m,
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(m, scores + j), inverse));
    }
#else
    float top = -INFINITY;
    for (int64_t j = 0; j < keys; j++) {
        scores[j] += mask[j];
        top = scores[j] > top ? scores[j] : top;
    }
    float total = 0.0f;
    for (int64_t j = 0; j < keys; j++) total += scores[j] = expf(scores[j] - top);
    const float inverse = 1.0f / total;
    for (int64_t j = 0; j < keys; j++) probabilities[j] = scores[j] * inverse;
#endif
}

/* Dropout's keep-scale of probabilities row `row` (lanes row·keys …): `kept` = P·factor where
 * the lane is at least `keep_from`, else 0 (without dropout, P), and with `keep` the scale
 * itself (factor or 0). */
static void keep_row(const float *probabilities, float *kept, float *keep, int64_t keys,
                     int dropout, uint64_t seed, int32_t keep_from, float factor, int64_t row) {
    if (!dropout) {
        memcpy(kept, probabilities, (size_t)keys * sizeof(float));
        return;
    }
    uint64_t words[keys / 4 + 2];
    const lane_t *lane = lanes_from(seed, row * keys, keys, words);
    if (keep != NULL) {
        _Pragma("omp simd")
        for (int64_t j = 0; j < keys; j++) {
            keep[j] = lane[j] >= keep_from ? factor : 0.0f;
            kept[j] = probabilities[j] * keep[j];
        }
    } else {
        _Pragma("omp simd")
        for (int64_t j = 0; j < keys; j++)
            kept[j] = lane[j] >= keep_from ? probabilities[j] * factor : 0.0f;
    }
}

/* Where a product's rows go: straight into a float32 destination, or through `staging` into a
 * bfloat16 one. */
typedef struct {
    float *rows;
    int64_t ld;
} product_target;

static inline product_target target_of(void *destination, int64_t at, int64_t stride, int is_bf16,
                                       float *staging, int64_t head_dim) {
    if (is_bf16) return (product_target){staging, head_dim};
    return (product_target){(float *)destination + at, stride};
}

/* Round a staged product into its bfloat16 destination (no-op for float32). */
static inline void finish(product_target t, void *destination, int64_t at, int64_t stride,
                          int is_bf16, int64_t rows, int64_t head_dim) {
    if (is_bf16) narrow(t.rows, t.ld, rows, head_dim, (bf16 *)destination + at, stride);
}

/* Whether every block in `blocks` was allocated; when not, also sets `*failed` (shared by the
 * threads of a parallel region). */
static int allocated(float *const *blocks, int count, int *failed) {
    for (int i = 0; i < count; i++)
        if (blocks[i] == NULL) {
            _Pragma("omp atomic write")
            *failed = 1;
            return 0;
        }
    return 1;
}

/* Forward of every (batch, head) pair. `q`, `k`, `v`: the first column of the query, key and
 * value parts of the packed projections (row strides `q_stride` and `kv_stride`, rows batch
 * by batch); biases (float32) may be NULL. `mask`: (batch, keys) additive. Writes
 * `probabilities` (float32 (B·H, queries, keys): the softmax, saved for backward) and
 * `context` ((B, queries, H·D), the projections' type). Returns 0, or 1 when scratch memory
 * could not be allocated (the outputs are then incomplete). */
int twelve_attention_forward(const void *q, int64_t q_stride, const void *k, const void *v,
                              int64_t kv_stride, const float *q_bias, const float *k_bias,
                              const float *v_bias, const float *mask, int dropout, uint64_t seed,
                              int32_t keep_from, float factor, float *probabilities,
                              void *context, int64_t batch, int64_t heads, int64_t queries,
                              int64_t keys, int64_t head_dim, float scale, int is_bf16,
                              int threads) {
    const int64_t keys_padded = padded(keys), width = heads * head_dim;
    int failed = 0;
    _Pragma("omp parallel num_threads(threads)") {
        float *query = scratch(queries * head_dim);
        float *key_t = scratch(head_dim * keys_padded);
        float *value = scratch(keys * head_dim);
        float *scores = scratch(queries * keys_padded);
        float *staging = is_bf16 ? scratch(queries * head_dim) : NULL;
        float *const blocks[] = {query, key_t, value, scores, is_bf16 ? staging : query};
        const int ready = allocated(blocks, 5, &failed);
        _Pragma("omp for schedule(static)")
        for (int64_t pair = 0; pair < batch * heads; pair++) {
            if (!ready) continue;
            const int64_t b = pair / heads, h = pair % heads, column = h * head_dim;
            gather(element(q, b * queries * q_stride + column, is_bf16), is_bf16, q_stride,
                   q_bias ? q_bias + column : NULL, scale, queries, head_dim, query);
            gather_transposed(element(k, b * keys * kv_stride + column, is_bf16), is_bf16,
                              kv_stride, k_bias ? k_bias + column : NULL, keys, head_dim, key_t,
                              keys_padded);
            gather(element(v, b * keys * kv_stride + column, is_bf16), is_bf16, kv_stride,
                   v_bias ? v_bias + column : NULL, 1.0f, keys, head_dim, value);
            gemm(queries, keys, head_dim, query, head_dim, 1, key_t, keys_padded, scores,
                 keys_padded, 1.0f);
            const float *row_mask = mask + b * keys;
            for (int64_t i = 0; i < queries; i++) {
                float *s = scores + i * keys_padded;
                float *p = probabilities + (pair * queries + i) * keys;
                softmax_row(s, row_mask, p, keys);
                keep_row(p, s, NULL, keys, dropout, seed, keep_from, factor, pair * queries + i);
            }
            const int64_t at = b * queries * width + column;
            const product_target out = target_of(context, at, width, is_bf16, staging, head_dim);
            gemm(queries, head_dim, keys, scores, keys_padded, 1, value, head_dim, out.rows, out.ld,
                 1.0f);
            finish(out, context, at, width, is_bf16, queries, head_dim);
        }
        free(query);
        free(key_t);
        free(value);
        free(scores);
        free(staging);
    }
    return failed;
}

/* sums[j] += Σ_i block[i·stride + j] for i < rows, j < width. */
static void add_columns(const float *block, int64_t stride, int64_t rows, int64_t width,
                        float *sums) {
    for (int64_t i = 0; i < rows; i++) {
        const float *row = block + i * stride;
        _Pragma("omp simd")
        for (int64_t j = 0; j < width; j++) sums[j] += row[j];
    }
}

/* Backward of every (batch, head) pair, from the forward's inputs, its `probabilities` and the
 * context gradient `grad_context` (the projections' type, row stride `g_stride`). Writes the
 * query, key and value gradients into their packed places (`grad_q` row stride `gq_stride`;
 * `grad_k`, `grad_v` row stride `gkv_stride`), each the gradient of the projection before its
 * bias and scale. With biases, also the bias gradients (float32, H·D each: the column sums of
 * those gradients before any rounding) into `q_bias_grad`, `k_bias_grad` and `v_bias_grad`,
 * summed per thread and then across threads in thread order, so a fixed thread count gives
 * the same bits run to run. Returns 0, or 1 when scratch memory could not be allocated (the
 * outputs are then incomplete). */
int twelve_attention_backward(const void *q, int64_t q_stride, const void *k, const void *v,
                               int64_t kv_stride, const float *q_bias, const float *k_bias,
                               const float *v_bias, int dropout, uint64_t seed, int32_t keep_from,
                               float factor, const float *probabilities, const void *grad_context,
                               int64_t g_stride, void *grad_q, int64_t gq_stride, void *grad_k,
                               void *grad_v, int64_t gkv_stride, float *q_bias_grad,
                               float *k_bias_grad, float *v_bias_grad, int64_t batch,
                               int64_t heads, int64_t queries, int64_t keys, int64_t head_dim,
                               float scale, int is_bf16, int threads) {
    const int64_t keys_padded = padded(keys), width = heads * head_dim;
    const int64_t longest = queries > keys ? queries : keys;
    const int biased = q_bias_grad != NULL;
    float *partials = biased ? calloc((size_t)(threads * 3 * width), sizeof(float)) : NULL;
    if (biased && partials == NULL) return 1;
    int failed = 0;
    _Pragma("omp parallel num_threads(threads)") {
        float *mine = biased ? partials + omp_get_thread_num() * 3 * width : NULL;
        float *query = scratch(queries * head_dim);
        float *key = scratch(keys * head_dim);
        float *value_t = scratch(head_dim * keys_padded);
        float *kept = scratch(queries * keys_padded);
        float *keep = dropout ? scratch(queries * keys_padded) : NULL;
        float *grad_scores = scratch(queries * keys_padded);
        float *grad_wide = is_bf16 ? scratch(queries * head_dim) : NULL;
        float *staging = is_bf16 ? scratch(longest * head_dim) : NULL;
        float *const blocks[] = {query,
                                 key,
                                 value_t,
                                 kept,
                                 grad_scores,
                                 dropout ? keep : query,
                                 is_bf16 ? grad_wide : query,
                                 is_bf16 ? staging : query};
        const int ready = allocated(blocks, 8, &failed);
        _Pragma("omp for schedule(static)")
        for (int64_t pair = 0; pair < batch * heads; pair++) {
            if (!ready) continue;
            const int64_t b = pair / heads, h = pair % heads, column = h * head_dim;
            const float *p = probabilities + pair * queries * keys;
            const int64_t query_at = b * queries * q_stride + column;
            const int64_t keyed_at = b * keys * kv_stride + column;
            gather(element(q, query_at, is_bf16), is_bf16, q_stride,
                   q_bias ? q_bias + column : NULL, scale, queries, head_dim, query);
            gather(element(k, keyed_at, is_bf16), is_bf16, kv_stride,
                   k_bias ? k_bias + column : NULL, 1.0f, keys, head_dim, key);
            gather_transposed(element(v, keyed_at, is_bf16), is_bf16, kv_stride,
                              v_bias ? v_bias + column : NULL, keys, head_dim, value_t,
                              keys_padded);
            const int64_t grad_at = b * queries * g_stride + column;
            const void *grad_source = element(grad_context, grad_at, is_bf16);
            const float *grad_out = grad_source;
            int64_t g_ld = g_stride;
            if (is_bf16) {
                gather(grad_source, 1, g_stride, NULL, 1.0f, queries, head_dim, grad_wide);
                grad_out = grad_wide;
                g_ld = head_dim;
            }
            for (int64_t i = 0; i < queries; i++)
                keep_row(p + i * keys, kept + i * keys_padded, keep ? keep + i * keys_padded : NULL,
                         keys, dropout, seed, keep_from, factor, pair * queries + i);
            const int64_t query_grad_at = b * queries * gq_stride + column;
            const int64_t keyed_grad_at = b * keys * gkv_stride + column;
            /* dV = keptᵀ · dO */
            product_target out = target_of(grad_v, keyed_grad_at, gkv_stride, is_bf16, staging,
                                           head_dim);
            gemm(keys, head_dim, queries, kept, 1, keys_padded, grad_out, g_ld, out.rows, out.ld,
                 1.0f);
            if (biased) add_columns(out.rows, out.ld, keys, head_dim, mine + 2 * width + column);
            finish(out, grad_v, keyed_grad_at, gkv_stride, is_bf16, keys, head_dim);
            /* d(kept) = dO · Vᵀ, then through dropout and softmax */
            gemm(queries, keys, head_dim, grad_out, g_ld, 1, value_t, keys_padded, grad_scores,
                 keys_padded, 1.0f);
            for (int64_t i = 0; i < queries; i++) {
                float *g = grad_scores + i * keys_padded;
                const float *pi = p + i * keys;
                if (dropout) {
                    const float *scale_row = keep + i * keys_padded;
                    _Pragma("omp simd")
                    for (int64_t j = 0; j < keys; j++) g[j] *= scale_row[j];
                }
                float dot = 0.0f;
                _Pragma("omp simd reduction(+:dot)")
                for (int64_t j = 0; j < keys; j++) dot += g[j] * pi[j];
                _Pragma("omp simd")
                for (int64_t j = 0; j < keys; j++) g[j] = pi[j] * (g[j] - dot);
            }
            /* dQ = dS · K · scale (the query was scaled before its product) */
            out = target_of(grad_q, query_grad_at, gq_stride, is_bf16, staging, head_dim);
            gemm(queries, head_dim, keys, grad_scores, keys_padded, 1, key, head_dim, out.rows,
                 out.ld, scale);
            if (biased) add_columns(out.rows, out.ld, queries, head_dim, mine + column);
            finish(out, grad_q, query_grad_at, gq_stride, is_bf16, queries, head_dim);
            /* dK = dSᵀ · (scaled Q) */
            out = target_of(grad_k, keyed_grad_at, gkv_stride, is_bf16, staging, head_dim);
            gemm(keys, head_dim, queries, grad_scores, 1, keys_padded, query, head_dim, out.rows,
                 out.ld, 1.0f);
            if (biased) add_columns(out.rows, out.ld, keys, head_dim, mine + width + column);
            finish(out, grad_k, keyed_grad_at, gkv_stride, is_bf16, keys, head_dim);
        }
        free(query);
        free(key);
        free(value_t);
        free(kept);
        free(keep);
        free(grad_scores);
        free(grad_wide);
        free(staging);
    }
    if (biased) {
        float *targets[3] = {q_bias_grad, k_bias_grad, v_bias_grad};
        for (int part = 0; part < 3; part++) {
            float *target = targets[part];
            for (int64_t j = 0; j < width; j++) target[j] = 0.0f;
            for (int t = 0; t < threads; t++) {
                const float *source = partials + (t * 3 + part) * width;
                for (int64_t j = 0; j < width; j++) target[j] += source[j];
            }
        }
    }
    free(partials);
    return failed;
}
