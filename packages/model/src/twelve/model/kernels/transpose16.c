/* Transpose of a matrix of 16-bit elements (bfloat16, float16), into a contiguous result, and
 * optionally the float32 sums of a bfloat16 matrix's columns.
 *
 * Compiled and loaded by twelve/model/cpu_kernels.py; called through ctypes from
 * twelve/model/reused_memory.py. The bfloat16 weight-gradient product Gᵀ·X of a linear layer
 * runs about twice as fast with Gᵀ contiguous as with G's transposed view (oneDNN's bf16
 * matmul), but PyTorch's strided copy moves a transposed bf16 matrix at ~2.5 GB/s. Here
 * 16×16 tiles are transposed in registers (AVX2 unpacks, then a lane exchange) and each
 * thread writes whole 32-column strips of the source as rows of the result. Moving bits, so
 * the values are exactly those of `copy_`. Without AVX2 the plain loop runs. The column sums
 * (the layer's bias gradient) are added up from the tiles already in registers: each column
 * in float32, 16 rows at a time, in row order.
 */
#include <stdint.h>
#include <string.h>
#include <omp.h>

#include "bf16.h"
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define TILE 16
#define STRIP 32 /* source columns per work item: one 64-byte line of a source row */

/* dst[c][r] = src[r][c] for r in [r0, r1), c in [c0, c1), one element at a time; with `sums`,
 * sums[c] += the bfloat16 values of the column. */
static void transpose_plain(const uint16_t *src, uint16_t *dst, float *sums, int64_t src_stride,
                            int64_t dst_stride, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
        float sum = 0.0f;
        for (int64_t r = r0; r < r1; r++) {
            const uint16_t bits = src[r * src_stride + c];
            dst[c * dst_stride + r] = bits;
            sum += bf16_to_float(bits);
        }
        if (sums != NULL) sums[c] += sum;
    }
}

#if defined(__AVX2__)
/* One 16×16 tile: rows r … r+15, columns c … c+15 of the source; with `sums`, sums[0 … 15]
 * += the bfloat16 values of its columns. */
static inline void transpose_tile(const uint16_t *src, uint16_t *dst, float *sums,
                                  int64_t src_stride, int64_t dst_stride) {
    __m256i v[TILE], w[TILE];
    for (int i = 0; i < TILE; i++)
        v[i] = _mm256_loadu_si256((const __m256i *)(src + i * src_stride));
    if (sums != NULL) {
#if defined(__AVX512F__)
        __m512 total = _mm512_setzero_ps();
        for (int i = 0; i < TILE; i++)
            total = _mm512_add_ps(total, bf16x16_to_float(v[i]));
        _mm512_storeu_ps(sums, _mm512_add_ps(_mm512_loadu_ps(sums), total));
#else
        for (int c = 0; c < TILE; c++) {
            float total = 0.0f;
            for (int i = 0; i < TILE; i++) total += bf16_to_float(src[i * src_stride + c]);
            sums[c] += total;
        }
#endif
    }
    /* Within each 128-bit lane: an 8×8 transpose of rows 0–7 and of rows 8–15. Lane 0 holds
     * columns 0–7, lane 1 columns 8–15. */
    for (int h = 0; h < 2; h++) {
        __m256i *a = v + 8 * h;
        __m256i t[8], u[8];
        for (int i = 0; i < 4; i++) {
            t[2 * i] = _mm256_unpacklo_epi16(a[2 * i], a[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_epi16(a[2 * i], a[2 * i + 1]);
        }
        for (int i = 0; i < 2; i++) {
            u[4 * i + 0] = _mm256_unpacklo_epi32(t[4 * i + 0], t[4 * i + 2]);
            u[4 * i + 1] = _mm256_unpackhi_epi32(t[4 * i + 0], t[4 * i + 2]);
            u[4 * i + 2] = _mm256_unpacklo_epi32(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm256_unpackhi_epi32(t[4 * i + 1], t[4 * i + 3]);
        }
        /* Column j of these eight rows: lane 0 for column j, lane 1 for column j + 8. */
        for (int j = 0; j < 4; j++) {
            w[8 * h + 2 * j] = _mm256_unpacklo_epi64(u[j], u[4 + j]);
            w[8 * h + 2 * j + 1] = _mm256_unpackhi_epi64(u[j], u[4 + j]);
        }
    }
    for (int j = 0; j < 8; j++) {
        __m256i low = _mm256_permute2x128_si256(w[j], w[8 + j], 0x20);
        __m256i high = _mm256_permute2x128_si256(w[j], w[8 + j], 0x31);
        _mm256_storeu_si256((__m256i *)(dst + j * dst_stride), low);
        _mm256_storeu_si256((__m256i *)(dst + (j + 8) * dst_stride), high);
    }
}
#endif

/* dst (cols × rows, contiguous) = transpose of src (rows × cols, rows `src_stride` apart);
 * with `sums` (NULL for none; bfloat16 sources only), sums[c] = the float32 sum of column c. */
void twelve_transpose16(const uint16_t *src, uint16_t *dst, float *sums, int64_t rows,
                        int64_t cols, int64_t src_stride, int threads) {
    if (sums != NULL) memset(sums, 0, (size_t)cols * sizeof *sums);
    const int64_t strips = (cols + STRIP - 1) / STRIP;
    _Pragma("omp parallel for schedule(static) num_threads(threads)")
    for (int64_t s = 0; s < strips; s++) {
        const int64_t c0 = s * STRIP;
        const int64_t c1 = c0 + STRIP < cols ? c0 + STRIP : cols;
        int64_t r = 0;
#if defined(__AVX2__)
        for (; r + TILE <= rows; r += TILE) {
            int64_t c = c0;
            for (; c + TILE <= c1; c += TILE)
                transpose_tile(src + r * src_stride + c, dst + c * rows + r,
                               sums == NULL ? NULL : sums + c, src_stride, rows);
            transpose_plain(src, dst, sums, src_stride, rows, r, r + TILE, c, c1);
        }
#endif
        transpose_plain(src, dst, sums, src_stride, rows, r, rows, c0, c1);
    }
}
