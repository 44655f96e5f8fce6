/* int8 weight quantization, one scale per row, bit for bit the torch reference
 * (rgemma.accel.quantize._quantize_rows); plain C, vectorized by the compiler at each level.
 *
 *   s[r]    = max_c |w[r, c]| / 127 in fp32, rounded to the scale's dtype; 1 where that is 0
 *   q[r, c] = clamp(round_half_even(w[r, c] / s[r]), -127, 127)
 *
 * w is bf16 (widened exactly: the top half of an fp32) or fp32, s bf16 or fp32 (flags in
 * `kinds`). The arithmetic is the reference's: a true fp32 division (built with
 * -ffp-contract=off and without -ffast-math, so nothing is contracted or reordered), rounding
 * to nearest even. The row maximum is taken on the bits: for finite floats, |w| orders as its
 * bit pattern with the sign cleared, an integer max the compiler vectorizes exactly. One pass
 * reads a row for its maximum and a second quantizes it while it is still in cache, where the
 * reference takes eight passes over a float32 copy. A row holding a NaN or an Inf gets a NaN or
 * Inf scale, as in the reference (its q is unspecified). rgemma/kernels/__init__.py compiles
 * this file on first use.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "scalars.h"

static inline int8_t to_int8(float v) { /* v / s rounded and clamped, as the reference */
    v = rintf(v);
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    return (int8_t)(int32_t)v;
}

/* The scale of a row whose largest |w| has the fp32 bits `top`, as the reference: / 127 in
 * fp32, rounded to the scale's dtype, 1 for 0 (NaN and Inf stay: a NaN's bits are the
 * largest). */
static inline float row_scale(uint32_t top, int scale_bf16) {
    float s = f32_of_bits(top) / 127.0f;
    if (scale_bf16)
        s = f32_of_bits((uint32_t)bf16_round(s) << 16);
    return s != 0.0f ? s : 1.0f;
}

static float row_bf16(const uint16_t *restrict w, int8_t *restrict q, int64_t cols, int scale_bf16) {
    uint16_t top = 0;
    for (int64_t c = 0; c < cols; c++) {
        uint16_t a = w[c] & 0x7fffu;
        top = a > top ? a : top;
    }
    const float s = row_scale((uint32_t)top << 16, scale_bf16);
    for (int64_t c = 0; c < cols; c++)
        q[c] = to_int8(f32_of_bits((uint32_t)w[c] << 16) / s);
    return s;
}

static float row_f32(const uint32_t *restrict w, int8_t *restrict q, int64_t cols, int scale_bf16) {
    uint32_t top = 0;
    for (int64_t c = 0; c < cols; c++) {
        uint32_t a = w[c] & 0x7fffffffu;
        top = a > top ? a : top;
    }
    const float s = row_scale(top, scale_bf16);
    for (int64_t c = 0; c < cols; c++)
        q[c] = to_int8(f32_of_bits(w[c]) / s);
    return s;
}

/* w (rows, cols) -> q (rows, cols), scale (rows,); kinds: bit 0, w is bf16 (else fp32); bit 1,
 * the scale is bf16 (else fp32). Returns 0. */
int rgemma_quantize_rows(const void *w, int kinds, void *scale, int8_t *q, int64_t rows, int64_t cols,
                         int threads) {
    const int w_bf16 = kinds & 1, scale_bf16 = (kinds >> 1) & 1;
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; r++) {
        const float s = w_bf16 ? row_bf16((const uint16_t *)w + r * cols, q + r * cols, cols, scale_bf16)
                               : row_f32((const uint32_t *)w + r * cols, q + r * cols, cols, scale_bf16);
        if (scale_bf16)
            ((uint16_t *)scale)[r] = bf16_round(s); /* exact: s is a bf16 value */
        else
            ((float *)scale)[r] = s;
    }
    return 0;
}
