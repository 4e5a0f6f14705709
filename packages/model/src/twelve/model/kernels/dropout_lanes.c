/* Dropout masks from the lanes of dropout_lanes.h, drawn in parallel.
 *
 * Compiled and loaded by twelve/model/cpu_kernels.py; called through ctypes from
 * twelve/model/dropout.py, which documents the rule (an element is kept when its lane is at
 * least `keep_from`, then scaled by `factor`).
 */
#include <stdint.h>
#include <omp.h>

#include "dropout_lanes.h"

enum { BLOCK = 4096 }; /* elements per parallel block: a multiple of four lanes */

/* The first `count` words of the mask seeded `seed`. */
void twelve_dropout_words(uint64_t seed, uint64_t *words, int64_t count, int threads) {
    _Pragma("omp parallel for simd schedule(static) num_threads(threads)")
    for (int64_t k = 0; k < count; k++) words[k] = lane_word(seed, k);
}

/* out[j] = factor where lane j is at least keep_from, else 0, for j < count. */
void twelve_keep_scale(uint64_t seed, int32_t keep_from, float factor, float *out,
                       int64_t count, int threads) {
    const int64_t blocks = (count + BLOCK - 1) / BLOCK;
    _Pragma("omp parallel for schedule(static) num_threads(threads)")
    for (int64_t b = 0; b < blocks; b++) {
        uint64_t words[BLOCK / 4 + 2];
        const int64_t start = b * BLOCK;
        const int64_t n = count - start < BLOCK ? count - start : BLOCK;
        const lane_t *lane = lanes_from(seed, start, n, words);
        float *o = out + start;
        _Pragma("omp simd")
        for (int64_t i = 0; i < n; i++) o[i] = lane[i] >= keep_from ? factor : 0.0f;
    }
}
