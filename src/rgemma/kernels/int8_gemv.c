/* int8 weight-only matrix-vector product for CPU decode (x86-64, AVX-512 F/BW/VL + VNNI).
 *
 *   y[b, n] = scale[n] * sum_k q[n, k] * x[b, k] + bias[n]
 *
 * q is int8 (n_out, k_in), row-major. Each row of x is first rounded to int16 against its own
 * absmax (|xq| <= 2^14 - 1: 14 bits, far finer than the bf16 activations it reads), then
 * vpdpwssd multiplies 32 int16 x int8 pairs per instruction into int32 lanes. Partial sums
 * are flushed to float every BLOCK_K inputs, so no int32 lane can overflow: a lane takes at
 * most (BLOCK_K / 32) * 2 products of |16383 * 127|, under 2^31. ROWS weight rows are read at a time, one
 * 64-byte line per row per iteration with a software prefetch PREFETCH bytes ahead: many
 * concurrent memory streams per thread are what bring a 2-core machine close to its memory
 * bandwidth (16 rows, 512 bytes ahead measured best: 1-row GEMV over 2B-shaped weights at
 * 25.4-26.2 GB/s against 24.6-25.1 with 8 rows, alternating runs).
 *
 * x, scale, bias and y are each float32 or bfloat16 (a flag per tensor), so a bf16 model needs
 * no conversion around the call; y is rounded to bf16 to nearest-even, as torch rounds.
 * rgemma/kernels/__init__.py compiles this file on first use; rgemma.quantize falls back to
 * torch kernels when it cannot.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scalars.h"

#ifndef ROWS
#define ROWS 16
#endif
#define BLOCK_K 8192
#ifndef PREFETCH
#define PREFETCH 512
#endif
#define XMAX 16383.0f

/* 16 activations from k on (fewer at the end: `mask`), as floats. */
static inline __m512 load16(const void *x, int64_t k, int kind, __mmask16 mask) {
    if (kind == F32) return _mm512_maskz_loadu_ps(mask, (const float *)x + k);
    __m256i h = _mm256_maskz_loadu_epi16(mask, (const uint16_t *)x + k);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* One row of x rounded to int16 against its absmax, 16 at a time (this runs on one thread
 * before the parallel product, so a scalar loop would cost ~60 us for 7680 inputs). Same
 * values as the scalar definition: NaN is ignored by the max (vmaxps returns its second
 * operand) and rounds to 0; the rounding is the CPU's default, to nearest even. */
static void quantize_row(const void *x, int64_t off, int kind, int64_t k_in, int16_t *xq,
                         float *xscale) {
    __m512 m = _mm512_setzero_ps();
    for (int64_t k = 0; k < k_in; k += 16)
        m = _mm512_max_ps(_mm512_abs_ps(load16(x, off + k, kind, tail_mask(k_in - k))), m);
    float mx = _mm512_reduce_max_ps(m);
    float s = mx > 0.f ? mx / XMAX : 1.f;
    __m512 inv = _mm512_set1_ps(1.f / s);
    int64_t k_pad = (k_in + 63) & ~(int64_t)63;
    for (int64_t k = 0; k < k_pad; k += 16) {
        __mmask16 mask = k < k_in ? tail_mask(k_in - k) : 0;
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(load16(x, off + k, kind, mask), inv));
        _mm256_storeu_si256((__m256i *)(xq + k), _mm512_cvtepi32_epi16(q));  /* masked-off: 0 */
    }
    *xscale = s;
}

static inline __m512i load_w(const int8_t *w, int64_t k, int64_t k_end) {
    int64_t left = k_end - k;
    __m256i v = left >= 32 ? _mm256_loadu_si256((const __m256i *)(w + k))
                           : _mm256_maskz_loadu_epi8((__mmask32)((1ull << left) - 1), w + k);
    return _mm512_cvtepi8_epi16(v);
}

/* acc[r] = sum_k w_r[k] * xq[k] for nrows <= ROWS rows starting at w (row stride k_in). */
static void dot_rows(const int8_t *w, int64_t k_in, int nrows, const int16_t *xq, float *acc) {
    for (int r = 0; r < nrows; r++) acc[r] = 0.f;
    for (int64_t k0 = 0; k0 < k_in; k0 += BLOCK_K) {
        int64_t k1 = k0 + BLOCK_K < k_in ? k0 + BLOCK_K : k_in;
        __m512i a[ROWS];
        for (int r = 0; r < ROWS; r++) a[r] = _mm512_setzero_si512();
        int64_t k = k0;
        if (nrows == ROWS) {  /* the main loop: whole 64-byte lines of ROWS rows */
            for (; k + 64 <= k1; k += 64) {
                __m512i x0 = _mm512_loadu_si512(xq + k), x1 = _mm512_loadu_si512(xq + k + 32);
                for (int r = 0; r < ROWS; r++) {
                    const int8_t *wr = w + r * k_in + k;
                    _mm_prefetch((const char *)(wr + PREFETCH), _MM_HINT_T0);
                    __m512i wv = _mm512_loadu_si512(wr);
                    __m512i lo = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(wv));
                    __m512i hi = _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(wv, 1));
                    a[r] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(a[r], lo, x0), hi, x1);
                }
            }
        }
        for (; k < k1; k += 32) {  /* tails: the last rows, and inputs past the last line */
            __m512i xv = _mm512_loadu_si512(xq + k);
            for (int r = 0; r < nrows; r++) a[r] = _mm512_dpwssd_epi32(a[r], load_w(w + r * k_in, k, k1), xv);
        }
        for (int r = 0; r < nrows; r++)  /* lanes summed as floats: 16 lanes could overflow int32 */
            acc[r] += _mm512_reduce_add_ps(_mm512_cvtepi32_ps(a[r]));
    }
}

/* x: (rows, k_in); q: (n_out, k_in) int8; scale: (n_out,); bias: (n_out,) or NULL;
 * y: (rows, n_out). kinds: x | scale << 1 | bias << 2 | y << 3, each bit 1 for bf16, 0 for
 * float32. Returns 0, or -1 when out of memory. */
int rgemma_int8_gemv(const void *x, const int8_t *q, const void *scale, const void *bias,
                     void *y, int64_t rows, int64_t n_out, int64_t k_in, int threads, int kinds) {
    int xk = kinds & 1, sk = (kinds >> 1) & 1, bk = (kinds >> 2) & 1, yk = (kinds >> 3) & 1;
    int64_t k_pad = (k_in + 63) & ~(int64_t)63;
    int16_t *xq = aligned_alloc(64, (size_t)(rows * k_pad * 2 + 64) & ~(size_t)63);
    float *xs = malloc(sizeof(float) * rows);
    if (!xq || !xs) { free(xq); free(xs); return -1; }
    for (int64_t b = 0; b < rows; b++) quantize_row(x, b * k_in, xk, k_in, xq + b * k_pad, xs + b);
    int64_t blocks = (n_out + ROWS - 1) / ROWS;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < blocks; i++) {
        int64_t n = i * ROWS;
        int nrows = n + ROWS <= n_out ? ROWS : (int)(n_out - n);
        float acc[ROWS];
        for (int64_t b = 0; b < rows; b++) {
            dot_rows(q + n * k_in, k_in, nrows, xq + b * k_pad, acc);
            for (int r = 0; r < nrows; r++) {
                float v = acc[r] * xs[b] * load_f(scale, n + r, sk) + (bias ? load_f(bias, n + r, bk) : 0.f);
                store_f(y, b * n_out + n + r, v, yk);
            }
        }
    }
    free(xq);
    free(xs);
    return 0;
}
