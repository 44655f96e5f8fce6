/* Linear layers for CPU decode (1 to ~128 rows) on x86-64 with AVX2 + FMA; built with
 * -DVW=16, the same source is the AVX-512F variant, and with -DVW=16 -DDPBF16 the AVX-512 BF16
 * variant (vdpbf16ps), for bf16 activations only. Built for aarch64, it is the NEON variant
 * (baseline ARMv8-A Advanced SIMD: 4-lane fp32 vectors and vfmaq_f32), an FMA variant with VW=4.
 *
 *   y[b, n] = round_once( sum_k x[b, k] * w[n, k] [* scale[n]] + bias[n] ),  fp32 sums throughout
 *
 * w is the nn.Linear weight (n_out, k_in), row-major, bf16, int8 (then with a scale per
 * output channel) or float32 (FMA variants). Each widens to fp32 exactly: a bf16 is the top
 * half of an fp32 (shift left 16); an int8 is sign-extended and converted. So the result is x.float() @ w.float().T (times
 * scale) plus bias, up to fp32 summation order, rounded once to y's dtype (nearest even).
 *
 * FMA variants: bf16 weights are widened two vectors at a time from one load: the even
 * elements by a shift, the odd ones by a mask (2 cheap ops per 2 * VW weights). The activations
 * are converted to fp32 once per call, into a buffer whose blocks of 2 * VW inputs hold the even
 * inputs, then the odd ones, to match; for int8 and float32 weights they stay in order.
 *
 * DPBF16 variant: vdpbf16ps multiplies 32 bf16 pairs and adds each pair's two products into
 * an fp32 lane: a bf16 x bf16 product is exact in fp32, so with bf16 activations (copied as
 * they are, in order) this is again the fp32 sum of the exact products, in another order, at
 * half the instructions of widening + FMA, which is what batches of rows are bound by. The
 * instruction treats denormal inputs and results as zero (bf16 values under 1.2e-38). int8
 * weights are converted to bf16 exactly (|q| <= 128) on the way.
 *
 * Each thread owns blocks of
 * weight rows: one input row streams NB1 weight rows at a time (many concurrent memory
 * streams are what bring one core close to memory bandwidth); more input rows take tiles of
 * NB weight rows x RB input rows (NB * RB fp32 accumulators in registers), so a block of weight
 * rows is read from memory once per panel of input rows (see ENTRY) and from cache for each
 * further RB input rows of it. Inputs past the last whole block (the tail) are copied
 * zero-padded and take the same path.
 *
 * x, scale, bias and y are each float32 or bfloat16 (a flag per tensor), so a bf16 model
 * converts nothing around the call (the DPBF16 variant takes bf16 x only: its caller checks).
 * rgemma/kernels/__init__.py compiles this file on first use.
 */
#if defined(__aarch64__)
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "widen_bf16 pairs bf16 values as a little-endian load does"
#endif
#include <arm_neon.h>
#else
#include <immintrin.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scalars.h"

#ifndef VW
#if defined(__aarch64__)
#define VW 4
#else
#define VW 8
#endif
#endif
#define BLK (2 * VW) /* inputs per step: two fp32 vectors (32 bf16 for DPBF16) */
#ifdef DPBF16
typedef uint16_t xtype; /* prepared activations: bf16 as they are */
#else
typedef float xtype; /* prepared activations: fp32 */
#endif
#ifndef NB1
#define NB1 8 /* weight rows streamed at once for one input row */
#endif
#ifndef NB
#define NB 4 /* weight rows x input rows per tile for more input rows */
#endif
#ifndef RB
#define RB 3
#endif
#ifndef X_BYTES
#define X_BYTES (384 << 10) /* fp32 activations per panel of input rows */
#endif
#define SERIAL_PREPARE (1 << 16) /* activations prepared before the threads start, at most */
#define MAX_N 8 /* the largest tile: MAX_N weight rows x MAX_R input rows */
#define MAX_R 4
#if NB1 > MAX_N || NB > MAX_N || RB > MAX_R
#error "tiles are at most MAX_N x MAX_R"
#endif
#define INLINE static inline __attribute__((always_inline))

#if defined(__aarch64__)
#if VW != 4
#error "the NEON variant has VW=4"
#endif
typedef float32x4_t vec;
#define ENTRY rgemma_linear_neon
#define vzero() vdupq_n_f32(0.f)
#define vload(p) vld1q_f32(p)
#define vfma(a, b, c) vfmaq_f32(c, a, b)
#define vsum(v) vaddvq_f32(v)
INLINE void widen_bf16(const uint16_t *p, vec *even, vec *odd) {
    uint32x4_t v = vreinterpretq_u32_u16(vld1q_u16(p));
    *even = vreinterpretq_f32_u32(vshlq_n_u32(v, 16));
    *odd = vreinterpretq_f32_u32(vandq_u32(v, vdupq_n_u32(0xFFFF0000u)));
}
INLINE void widen_i8(const int8_t *p, vec *lo, vec *hi) {
    int16x8_t v = vmovl_s8(vld1_s8(p));
    *lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(v)));
    *hi = vcvtq_f32_s32(vmovl_high_s16(v));
}
#elif VW == 8
typedef __m256 vec;
#define ENTRY rgemma_linear_avx2
#define vzero() _mm256_setzero_ps()
#define vload(p) _mm256_loadu_ps(p)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
INLINE float vsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
INLINE void widen_bf16(const uint16_t *p, vec *even, vec *odd) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    *even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    *odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000u)));
}
INLINE void widen_i8(const int8_t *p, vec *lo, vec *hi) {
    *lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
    *hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))));
}
#elif VW == 16
typedef __m512 vec;
#ifdef DPBF16
#define ENTRY rgemma_linear_avx512bf16
#else
#define ENTRY rgemma_linear_avx512
#endif
#define vzero() _mm512_setzero_ps()
#define vload(p) _mm512_loadu_ps(p)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vsum(v) _mm512_reduce_add_ps(v)
INLINE void widen_bf16(const uint16_t *p, vec *even, vec *odd) {
    __m512i v = _mm512_loadu_si512(p);
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    *odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000u)));
}
INLINE void widen_i8(const int8_t *p, vec *lo, vec *hi) {
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
}
#ifdef DPBF16
/* 32 int8 weights as bf16, in order (exact: an int8 needs at most 8 significant bits). */
INLINE __m512bh int8_as_bf16(const int8_t *p) {
    vec lo, hi;
    widen_i8(p, &lo, &hi);
    return _mm512_cvtne2ps_pbh(hi, lo);
}
#endif
#else
#error "VW is 8 (AVX2) or 16 (AVX-512F) on x86-64"
#endif
#if defined(DPBF16) && VW != 16
#error "DPBF16 needs VW=16"
#endif

enum { BF16W = 0, INT8W = 1, F32W = 2 };    /* weight kinds (F32W: FMA variants only) */
#define WSIZE(wk) ((wk) == INT8W ? 1 : (wk) == F32W ? 4 : 2)

/* One row of x (k_in values) -> fp32, zero-padded to k_pad; for bf16 weights each block of BLK
 * inputs is reordered to its even inputs then its odd ones, as widen_bf16 pairs them. */
static void prepare_row(const void *x, int64_t off, int kind, int64_t k_in, int64_t k_pad, int wk,
                        xtype *dst) {
#ifdef DPBF16
    (void)kind, (void)wk; /* bf16 x, in order */
    memcpy(dst, (const uint16_t *)x + off, (size_t)k_in * 2);
    memset(dst + k_in, 0, (size_t)(k_pad - k_in) * 2);
    return;
#endif
    for (int64_t k = 0; k < k_pad; k++) {
        int64_t j = k % BLK, src = wk != BF16W ? k : k - j + (j < VW ? 2 * j : 2 * (j - VW) + 1);
        dst[k] = (xtype)(src < k_in ? load_f(x, off + src, kind) : 0.f);
    }
}

/* One BLK step of `nb` weight rows (row stride k_in, starting at input k) against `rb` rows
 * of the prepared x (row stride k_pad): acc[n][r] += w_n . x_r. */
INLINE void step(const void *w, int wk, int64_t stride, int64_t k, const xtype *xp, int64_t k_pad,
                 int nb, int rb, vec acc[MAX_N][MAX_R]) {
#pragma GCC unroll 8
    for (int n = 0; n < nb; n++) {
#ifdef DPBF16
        __m512bh pairs = wk == INT8W ? int8_as_bf16((const int8_t *)w + n * stride + k)
                            : (__m512bh)_mm512_loadu_si512((const uint16_t *)w + n * stride + k);
#pragma GCC unroll 4
        for (int r = 0; r < rb; r++)
            acc[n][r] = _mm512_dpbf16_ps(acc[n][r], pairs, (__m512bh)_mm512_loadu_si512(xp + r * k_pad + k));
#else
        vec a, b;
        if (wk == INT8W) widen_i8((const int8_t *)w + n * stride + k, &a, &b);
        else if (wk == F32W) a = vload((const float *)w + n * stride + k), b = vload((const float *)w + n * stride + k + VW);
        else widen_bf16((const uint16_t *)w + n * stride + k, &a, &b);
#pragma GCC unroll 4
        for (int r = 0; r < rb; r++) {
            acc[n][r] = vfma(a, vload(xp + r * k_pad + k), acc[n][r]);
            acc[n][r] = vfma(b, vload(xp + r * k_pad + k + VW), acc[n][r]);
        }
#endif
    }
}

/* out[n * rb + r] = w_n . x_r over all k_in inputs, for nb weight rows and rb input rows. */
INLINE void tile(const void *w, int wk, int64_t k_in, const xtype *xp, int64_t k_pad, int nb, int rb,
                 float *out) {
    vec acc[MAX_N][MAX_R];
#pragma GCC unroll 8
    for (int n = 0; n < nb; n++)
#pragma GCC unroll 4
        for (int r = 0; r < rb; r++) acc[n][r] = vzero();
    int64_t k_main = k_in - k_in % BLK, size = WSIZE(wk);
    for (int64_t k = 0; k < k_main; k += BLK) step(w, wk, k_in, k, xp, k_pad, nb, rb, acc);
    if (k_main < k_in) { /* the tail, zero-padded to a whole step */
        uint8_t tail[MAX_N * BLK * 4] __attribute__((aligned(64)));
        memset(tail, 0, sizeof tail);
        for (int n = 0; n < nb; n++)
            memcpy(tail + n * BLK * size, (const uint8_t *)w + (n * k_in + k_main) * size,
                   (size_t)((k_in - k_main) * size));
        step(tail, wk, BLK, 0, xp + k_main, k_pad, nb, rb, acc);
    }
#pragma GCC unroll 8
    for (int n = 0; n < nb; n++)
#pragma GCC unroll 4
        for (int r = 0; r < rb; r++) out[n * rb + r] = vsum(acc[n][r]);
}

/* The tile shapes the loops below use, each compiled with its constants (RB may be set to 4). */
#define TILE(N, R)                                                                              \
    static void tile_##N##x##R(const void *w, int wk, int64_t k_in, const xtype *xp, int64_t k_pad, \
                               float *out) {                                                    \
        if (wk == INT8W) tile(w, INT8W, k_in, xp, k_pad, N, R, out);                            \
        else if (wk == F32W) tile(w, F32W, k_in, xp, k_pad, N, R, out);                         \
        else tile(w, BF16W, k_in, xp, k_pad, N, R, out);                                        \
    }
TILE(NB1, 1)
TILE(NB, 1)
TILE(NB, 2)
TILE(NB, 3)
TILE(NB, 4)
TILE(1, 1)
TILE(1, 2)
TILE(1, 3)
TILE(1, 4)

typedef void (*tile_fn)(const void *, int, int64_t, const xtype *, int64_t, float *);
static const tile_fn TILES[NB + 1][5] = {
    [1] = {NULL, tile_1x1, tile_1x2, tile_1x3, tile_1x4},
    [NB] = {NULL, tile_NBx1, tile_NBx2, tile_NBx3, tile_NBx4},
};

typedef struct {
    const void *scale, *bias;
    void *y;
    int64_t n_out;
    int sk, bk, yk;
} output;

/* y[b0 + r, n0 + n] = out[n * rb + r] [* scale] [+ bias], rounded once to y's dtype. */
static void store(const output *o, const float *out, int64_t n0, int nb, int64_t b0, int rb) {
    for (int n = 0; n < nb; n++) {
        float s = o->scale ? load_f(o->scale, n0 + n, o->sk) : 1.f;
        float bias = o->bias ? load_f(o->bias, n0 + n, o->bk) : 0.f;
        for (int r = 0; r < rb; r++) {
            float v = out[n * rb + r];
            if (o->scale) v *= s;
            if (o->bias) v += bias;
            store_f(o->y, (b0 + r) * o->n_out + n0 + n, v, o->yk);
        }
    }
}

/* `nb` weight rows from n0 (nb == NB, or 1 for the last few) times input rows [b_lo, b_hi). */
static void rows_block(const void *w, int wk, int64_t k_in, const xtype *xp, int64_t k_pad,
                       int64_t b_lo, int64_t b_hi, int64_t n0, int nb, const output *o) {
    float out[MAX_N * MAX_R];
    const uint8_t *wn = (const uint8_t *)w + n0 * k_in * WSIZE(wk);
    if (b_hi - b_lo == 1 && nb == NB1) { /* one input row: NB1 weight row streams */
        tile_NB1x1(wn, wk, k_in, xp + b_lo * k_pad, k_pad, out);
        store(o, out, n0, nb, b_lo, 1);
        return;
    }
    for (int64_t b0 = b_lo; b0 < b_hi; b0 += RB) {
        int rb = b_hi - b0 < RB ? (int)(b_hi - b0) : RB;
        TILES[nb][rb](wn, wk, k_in, xp + b0 * k_pad, k_pad, out);
        store(o, out, n0, nb, b0, rb);
    }
}

/* x: (rows, k_in); w: (n_out, k_in), bf16 (wk == 0), int8 (wk == 1, with a scale (n_out,)) or
 * float32 (wk == 2; not in the DPBF16 variant);
 * scale (bf16 weights) and bias may be NULL; y: (rows, n_out). kinds: x | scale << 1 |
 * bias << 2 | y << 3, each bit 1 for bf16, 0 for float32. Returns 0, -1 when out of memory, or
 * -2 for inputs this variant does not take.
 * Input rows are taken in panels of at most X_BYTES of fp32 activations, which stay in each
 * core's L2 cache while every weight row passes them (a weight pass per panel). */
int ENTRY(const void *x, const void *w, int wk, const void *scale, const void *bias, void *y,
          int64_t rows, int64_t n_out, int64_t k_in, int threads, int kinds) {
    output o = {scale, bias, y, n_out, (kinds >> 1) & 1, (kinds >> 2) & 1, (kinds >> 3) & 1};
    int xk = kinds & 1;
#ifdef DPBF16
    if (wk == F32W || !xk) return -2; /* bf16 activations and bf16/int8 weights only */
#endif
    int64_t k_pad = (k_in + BLK - 1) / BLK * BLK;
    xtype *xp = aligned_alloc(64, ((size_t)(rows * k_pad * sizeof(xtype)) + 127) & ~(size_t)63);
    if (!xp) return -1;
    int64_t nb = rows == 1 ? NB1 : NB, blocks = n_out / nb, whole = blocks * nb;
    int64_t panel = X_BYTES / (k_pad * (int64_t)sizeof(xtype) + 1) / RB * RB;
    if (panel < RB) panel = RB;
    /* A few rows are prepared here: a barrier costs more than that, and far more when another
     * process holds one of the cores. Panels write disjoint rows of y: no barrier between them. */
    int serial = rows * k_pad <= SERIAL_PREPARE;
    if (serial)
        for (int64_t b = 0; b < rows; b++) prepare_row(x, b * k_in, xk, k_in, k_pad, wk, xp + b * k_pad);
    #pragma omp parallel num_threads(threads)
    {
        if (!serial) {
            #pragma omp for schedule(static)
            for (int64_t b = 0; b < rows; b++) prepare_row(x, b * k_in, xk, k_in, k_pad, wk, xp + b * k_pad);
        }
        for (int64_t b_lo = 0; b_lo < rows; b_lo += panel) {
            int64_t b_hi = rows - b_lo < panel ? rows : b_lo + panel;
            #pragma omp for schedule(static) nowait
            for (int64_t i = 0; i < blocks + (n_out - whole); i++) {
                if (i < blocks) rows_block(w, wk, k_in, xp, k_pad, b_lo, b_hi, i * nb, (int)nb, &o);
                else rows_block(w, wk, k_in, xp, k_pad, b_lo, b_hi, whole + (i - blocks), 1, &o); /* the last few */
            }
        }
    }
    free(xp);
    return 0;
}
