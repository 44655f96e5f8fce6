/* Scalar float32 / bfloat16 conversions shared by the kernels (each includes this header).
 *
 * A tensor's dtype is a flag, F32 or BF16. Widening a bf16 to float32 is exact (it is the top
 * half of a float32); rounding a float32 to bf16 goes to nearest even, as torch does, and a
 * NaN stays a NaN (0x7FC0): adding the rounding bias to a NaN's payload could otherwise carry
 * into the exponent and sign.
 */
#ifndef RGEMMA_SCALARS_H
#define RGEMMA_SCALARS_H
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { F32 = 0, BF16 = 1 }; /* the dtype flag of an activation, scale, bias or output */

static inline float f32_of_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_round(float f) { /* nearest even, as torch's float -> bfloat16 */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return isnan(f) ? (uint16_t)0x7FC0u : (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float load_f(const void *p, int64_t i, int kind) {
    if (kind == F32) return ((const float *)p)[i];
    return f32_of_bits((uint32_t)((const uint16_t *)p)[i] << 16);
}

static inline void store_f(void *p, int64_t i, float f, int kind) {
    if (kind == F32) ((float *)p)[i] = f;
    else ((uint16_t *)p)[i] = bf16_round(f);
}

#endif
