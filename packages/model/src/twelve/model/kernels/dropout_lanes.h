/* Dropout lanes: uniform 16-bit values, four to a 64-bit word of a counter-based SplitMix64.
 *
 * Word k of the mask seeded `seed` is SplitMix64's output function applied to
 * seed + (k + 1)·γ (γ = 0x9E3779B97F4A7C15): SplitMix64's own stream, so any word can be
 * computed on its own and a mask is drawn in parallel or rebuilt where it is used. Lane j is
 * bits 16·(j mod 4) … 16·(j mod 4) + 15 of word ⌊j/4⌋ read as int16, which is the word array
 * read as int16 on a little-endian machine (checked below). twelve/model/dropout.py computes
 * the same lanes with numpy when the kernels are not built.
 */
#ifndef TWELVE_DROPOUT_LANES_H
#define TWELVE_DROPOUT_LANES_H

#include <stdint.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "dropout lanes are read from their words as little-endian int16"
#endif

/* int16 lanes read straight out of the uint64 words. */
typedef int16_t __attribute__((may_alias)) lane_t;

static inline uint64_t lane_word(uint64_t seed, int64_t k) {
    uint64_t z = seed + (uint64_t)(k + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Words first … first + count − 1 into `out`. */
static inline void lane_words(uint64_t seed, int64_t first, int64_t count, uint64_t *out) {
    _Pragma("omp simd")
    for (int64_t i = 0; i < count; i++) out[i] = lane_word(seed, first + i);
}

/* Lanes first … first + count − 1 (count > 0), drawn into `words` (room for count / 4 + 2
 * words): a pointer to lane `first`. */
static inline const lane_t *lanes_from(uint64_t seed, int64_t first, int64_t count,
                                       uint64_t *words) {
    const int64_t word_count = ((first + count - 1) >> 2) - (first >> 2) + 1;
    lane_words(seed, first >> 2, word_count, words);
    return (const lane_t *)words + (first & 3);
}

#endif
