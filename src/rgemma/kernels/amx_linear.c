/* bf16 linear layers for decode-sized batches on CPUs with AMX (x86-64 AMX-TILE + AMX-BF16).
 *
 *   y[b, n] = bf16( (sum_k x[b, k] * w[n, k]) [* scale[n]] + bias[n] ),  fp32 accumulation
 *
 * w is the nn.Linear weight (n_out, k_in), row-major, bf16 or int8 (then with a scale per
 * row). bf16 weights are read in place: AMX's left operand is a plain row-major tile (16
 * weight rows x 32 inputs). int8 rows are widened to bf16 (exactly: |q| <= 127) 32 rows at a
 * time into a per-thread buffer, and the scale multiplies the fp32 sums, so an int8 product is
 * the exact product with the int8 weights, rounded once. Activations are repacked per call into
 * AMX's pair-interleaved layout (16 input pairs x 16 batch rows), a few KB. Each thread owns
 * blocks of 32 weight rows: it streams them from memory once for the first 32 batch rows (with
 * software prefetch), and from its L2 cache for each further 32. Four fp32 accumulator tiles
 * hold a 32 x 32 block of y; bias is added in fp32 and y is rounded to nearest-even, once.
 * rgemma/kernels/__init__.py compiles this file on first use and asks Linux for AMX state.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "scalars.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define PREFETCH_BLOCKS 8 /* prefetch the weight rows this many 32-input blocks ahead */

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Linux hands out AMX state only on request, once per process. Returns 0 when granted. */
int rgemma_amx_init(void) {
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 0 : -1;
}

static void configure_tiles(void) {
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette_id = 1;
    for (int t = 0; t < 8; t++) { c.colsb[t] = 64; c.rows[t] = 16; }
    _tile_loadconfig(&c);
}

/* x (rows, k_in) -> xp[bb][kb][pair 16][batch 16][2]: the right-hand tiles, zero-padded. */
static void pack_x(const uint16_t *x, int64_t rows, int64_t k_in, int64_t nkb, uint16_t *xp) {
    int64_t nbb = (rows + 15) / 16;
    memset(xp, 0, (size_t)(nbb * nkb * 512 * 2));
    for (int64_t b = 0; b < rows; b++) {
        const uint16_t *src = x + b * k_in;
        uint16_t *dst = xp + (b / 16) * nkb * 512 + (b % 16) * 2;
        int64_t k = 0;
        for (; k + 2 <= k_in; k += 2) /* one input pair (4 bytes) at a time */
            memcpy(dst + (k / 32) * 512 + ((k % 32) / 2) * 32, src + k, 4);
        if (k < k_in) dst[(k / 32) * 512 + ((k % 32) / 2) * 32] = src[k];
    }
}

/* bf16 -> fp32 for 16 values (fewer under `mask`, the rest 0) */
static inline __m512 load_bf16(const uint16_t *p, __mmask16 mask) {
    __m256i h = _mm256_maskz_loadu_epi16(mask, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* fp32 -> bf16, round to nearest even, NaN -> 0x7FC0: bf16_round for 16 values at once. */
static inline __m256i round_bf16(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0)));
}

/* One 16 x 16 accumulator tile c[m][b] -> y[b0 + b][n0 + m0 + m] (* scale) (+ bias), for the
 * `rows_here` batch rows and `mv` weight rows that exist: a column of c per batch row. */
static void store_tile(const float *c, int64_t rows_here, int64_t mv, const uint16_t *scale,
                       const uint16_t *bias, uint16_t *y, int64_t n_out) {
    __mmask16 mask = (__mmask16)(mv >= 16 ? 0xFFFF : (1u << mv) - 1);
    __m512 s = scale ? load_bf16(scale, mask) : _mm512_set1_ps(1.0f);
    __m512 bi = bias ? load_bf16(bias, mask) : _mm512_setzero_ps();
    __m512i column = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                        _mm512_set1_epi32(16));
    for (int64_t b = 0; b < rows_here; b++) {
        __m512 v = _mm512_i32gather_ps(_mm512_add_epi32(column, _mm512_set1_epi32((int)b)), c, 4);
        if (scale) v = _mm512_mul_ps(v, s);
        if (bias) v = _mm512_add_ps(v, bi);
        _mm256_mask_storeu_epi16(y + b * n_out, mask, round_bf16(v));
    }
}

/* One 32 x 32 block of y: weight rows [n0, n0 + valid) (valid <= 32) times batch rows
 * [bb0 * 16, bb0 * 16 + 32). `a` is the block's first weight row, `stride` its row length in
 * elements; when `direct`, 32 rows and every 32-input block can be tile-loaded from it in place,
 * else each is copied zero-padded first. `scale` (int8 weights) multiplies the fp32 sums. */
static void block(const uint16_t *a, int64_t stride, int64_t valid, int direct, int64_t k_in,
                  const uint16_t *xp, int64_t nkb, int64_t rows, int64_t bb0, int prefetch,
                  const uint16_t *scale, const uint16_t *bias, uint16_t *y, int64_t n_out, int64_t n0) {
    int64_t nbb = (rows + 15) / 16;
    int two = bb0 + 1 < nbb;
    uint16_t tmp[32 * 32] __attribute__((aligned(64)));
    float c[4][16 * 16] __attribute__((aligned(64)));
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    const uint16_t *x0 = xp + bb0 * nkb * 512, *x1 = xp + (bb0 + 1) * nkb * 512;
    for (int64_t kb = 0; kb < nkb; kb++) {
        if (direct && (kb + 1) * 32 <= k_in) {
            const uint16_t *p = a + kb * 32;
            if (prefetch && kb + PREFETCH_BLOCKS < nkb)
                for (int r = 0; r < 32; r++)
                    _mm_prefetch((const char *)(p + r * stride + PREFETCH_BLOCKS * 32), _MM_HINT_T0);
            _tile_loadd(4, p, stride * 2);
            _tile_loadd(5, p + 16 * stride, stride * 2);
        } else {
            memset(tmp, 0, sizeof tmp);
            int64_t kn = k_in - kb * 32 < 32 ? k_in - kb * 32 : 32;
            for (int64_t r = 0; r < valid; r++) memcpy(tmp + r * 32, a + r * stride + kb * 32, (size_t)kn * 2);
            _tile_loadd(4, tmp, 64);
            _tile_loadd(5, tmp + 16 * 32, 64);
        }
        _tile_loadd(6, x0 + kb * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 5, 6);
        if (two) {
            _tile_loadd(7, x1 + kb * 512, 64);
            _tile_dpbf16ps(2, 4, 7);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, c[0], 64); _tile_stored(1, c[1], 64);
    if (two) { _tile_stored(2, c[2], 64); _tile_stored(3, c[3], 64); }
    for (int t = 0; t < (two ? 4 : 2); t++) {
        int64_t m0 = (t % 2) * 16, b0 = (bb0 + t / 2) * 16;
        int64_t mv = valid - m0, rows_here = rows - b0 < 16 ? rows - b0 : 16;
        if (mv > 0)
            store_tile(c[t], rows_here, mv, scale ? scale + n0 + m0 : NULL, bias ? bias + n0 + m0 : NULL,
                       y + b0 * n_out + n0 + m0, n_out);
    }
}

/* 32 int8 weight rows (fewer at the end) -> bf16 (exact: |q| <= 127), zero-padded to k_pad. */
static void widen_rows(const int8_t *q, int64_t valid, int64_t k_in, int64_t k_pad, uint16_t *dst) {
    for (int64_t r = 0; r < 32; r++) {
        uint16_t *d = dst + r * k_pad;
        int64_t k = 0;
        if (r < valid) {
            const int8_t *s = q + r * k_in;
            for (; k + 32 <= k_in; k += 32) {
                __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(s + k)));
                __m512i u = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(s + k + 16)));
                __m512bh h = _mm512_cvtne2ps_pbh(_mm512_cvtepi32_ps(u), _mm512_cvtepi32_ps(v));
                _mm512_storeu_si512(d + k, (__m512i)h);
            }
            for (; k < k_in; k++) d[k] = bf16_round((float)s[k]);
        }
        for (; k < k_pad; k++) d[k] = 0;
    }
}

/* y (rows, n_out) = x (rows, k_in) @ w^T [* scale] + bias, every tensor bf16 but w, which is
 * bf16 (q8 == 0) or int8 with a bf16 scale per row (q8 == 1). scale and bias may be NULL.
 * Call rgemma_amx_init() first. Returns 0, or -1 when out of memory. */
int rgemma_amx_linear(const uint16_t *x, const void *w, int q8, const uint16_t *scale,
                      const uint16_t *bias, uint16_t *y, int64_t rows, int64_t n_out, int64_t k_in,
                      int threads) {
    int64_t nkb = (k_in + 31) / 32, nbb = (rows + 15) / 16, k_pad = nkb * 32;
    uint16_t *xp = aligned_alloc(64, (size_t)(nbb * nkb * 1024));
    if (!xp) return -1;
    pack_x(x, rows, k_in, nkb, xp);
    int64_t blocks = (n_out + 31) / 32;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        uint16_t *wide = q8 ? aligned_alloc(64, (size_t)(32 * k_pad * 2)) : NULL;
        if (q8 && !wide) {
            #pragma omp atomic write
            failed = 1;
        }
        configure_tiles();
        #pragma omp for schedule(static)
        for (int64_t i = 0; i < blocks; i++) {
            int64_t n0 = i * 32, valid = n_out - n0 < 32 ? n_out - n0 : 32;
            if (q8 && !wide) continue;
            if (q8) widen_rows((const int8_t *)w + n0 * k_in, valid, k_in, k_pad, wide);
            const uint16_t *a = q8 ? wide : (const uint16_t *)w + n0 * k_in;
            int64_t stride = q8 ? k_pad : k_in;
            for (int64_t bb = 0; bb < nbb; bb += 2)
                block(a, stride, valid, q8 || valid == 32, q8 ? k_pad : k_in, xp, nkb, rows, bb,
                      !q8 && bb == 0, scale, bias, y, n_out, n0);
        }
        _tile_release();
        free(wide);
    }
    free(xp);
    return failed ? -1 : 0;
}
