// gpucorr CUDA kernels: fast mode in one launch (crop, log, correlate, evaluate).
//
// fast_correlate<T, N>: for N x N crops, N even (4 .. 64), every
//   (frame, peak) pair of a batch is cropped, log-scaled, correlated with the
//   template by FFT and evaluated without leaving the SM: the crop, its
//   spectrum and its correlation map live in shared memory, and global memory
//   sees the frames once and the results once. N / 2 threads work on one crop;
//   a block holds blockDim.x / (N / 2) crops.
//
//   Per crop `job` (frame job / n_peaks, peak job % n_peaks) it computes what
//   the multi-launch pipeline (crop.cu, cuFFT, evaluate.cu) computes:
//   * the crop: the N x N square at peaks[p] - N / 2 of frame n (frames:
//     C-contiguous (n_frames, fy, fx) of the frames' own dtype T, uint16
//     included), 0 outside the frame, as float; `bad[job]` flags a NaN or an
//     infinity, and unless it is set and with use_log every value x becomes
//     log((x - min(crop)) + 1), the shift computed in double (use_log 0: the
//     values as they are, refine(..., scaling="none"));
//   * its correlation map: irfft2(rfft2(crop) * filt), where filt (N x (N/2 + 1)
//     complex, interleaved re/im) is the correlation filter with the inverse
//     transform's 1 / N^2 folded in; the DC term is split off first (the map
//     is zero-mean and the mean goes into the height, as in
//     gpucorr._pipeline.correlate);
//   * the integer argmax (first maximum in C order), the refined position
//     (window.cuh), the height (maximum plus mean, in double) and the
//     elevation (min over pixels at distance >= 1.5 from the refined position
//     of (max - value) / d, clipped at 0), as evaluate.cu does, shifted by
//     peaks[p] - N / 2 into frame coordinates;
//   * with write_maps, the zero-mean map itself into maps[job] (for the DFT
//     upsampling that follows); otherwise `maps` is not touched.
//
//   The 2-D transforms of real data use packing: thread t transforms rows 2t
//   and 2t + 1 as one complex row (a + i b) and splits the result into the two
//   half spectra; it then takes column t of the half spectrum (t >= 1), thread
//   0 the two real columns 0 and N / 2 packed as one; and the inverse rows go
//   back two at a time as one complex row whose real and imaginary parts are
//   the two map rows. Every 1-D transform is one thread's DFT of N complex
//   values held in registers (N fully unrolled, so every index is a constant):
//   for N = M * 2^A, M odd, the M-point DFTs of the 2^A decimated subsequences
//   by definition, then A radix-2 decimation-in-time stages (for a power of
//   two, M = 1: a plain radix-2 FFT). `twiddles` holds exp(-2 pi i k / N),
//   k < N, interleaved re/im, computed in double on the host. Shared memory
//   (bytes): 4 * (2 N + crops_per_block * fast_crop_floats(N)).
//
// Self-contained for NVRTC once gpucorr._cuda.kernel_source() has pasted in
// window.cuh: no host headers, CUDA built-ins only.

#include "window.cuh"

__device__ __forceinline__ float fast_infinity() { return __int_as_float(0x7f800000); }

// floats of shared memory one crop uses: the half spectrum, N x (N/2 + 1) complex
// as two real arrays, which the N x (N + 1) map (rows padded by one) later
// overwrites; N/2 + N/2 reduction slots and 4 scalars; made odd, so that the
// two crops of a warp use different shared-memory banks
__host__ __device__ constexpr int fast_crop_floats(int n) { return (n * (n + 2) + n + 4) | 1; }

// the low `bits` bits of i reversed (bits <= 8); a loop of constant trip count,
// so that with a constant i it folds to a constant
__device__ __forceinline__ constexpr int fast_bit_reverse(int i, int bits) {
    int r = 0;
#pragma unroll
    for (int b = 0; b < 8; ++b) {
        r |= ((i >> b) & 1) << (7 - b);
    }
    return r >> (8 - bits);
}

__device__ __forceinline__ constexpr int fast_log2(int n) { return n <= 1 ? 0 : 1 + fast_log2(n / 2); }

// n without its factors of two
__device__ __forceinline__ constexpr int fast_odd_part(int n) {
    return n % 2 == 0 ? fast_odd_part(n / 2) : n;
}

// the smallest power of two >= n
__device__ __forceinline__ constexpr int fast_ceil_pow2(int n) {
    return n <= 1 ? 1 : 2 * fast_ceil_pow2((n + 1) / 2);
}

// One radix-2 stage (butterflies of span HALF) and, recursively, the ones after it:
// a template per stage, so that every loop has a constant trip count and every
// index into the register arrays is a constant (no local memory).
template <int N, int HALF, bool INVERSE>
__device__ __forceinline__ void fast_stages(float (&re)[N], float (&im)[N],
                                            const float* __restrict__ tw_re,
                                            const float* __restrict__ tw_im) {
    if constexpr (HALF < N) {
#pragma unroll
        for (int start = 0; start < N; start += 2 * HALF) {
#pragma unroll
            for (int k = 0; k < HALF; ++k) {
                const int t = k * (N / (2 * HALF));     // exp(-2 pi i k / (2 HALF))
                const int a = start + k;
                const int b = a + HALF;
                float xr = re[b];
                float xi = im[b];
                if (t != 0) {
                    const float wr = tw_re[t];
                    const float wi = INVERSE ? -tw_im[t] : tw_im[t];
                    xr = re[b] * wr - im[b] * wi;
                    xi = re[b] * wi + im[b] * wr;
                }
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] = re[a] + xr;
                im[a] = im[a] + xi;
            }
        }
        fast_stages<N, 2 * HALF, INVERSE>(re, im, tw_re, tw_im);
    }
}

// In-place DFT of (re, im), natural order in and out: forward sums
// x[j] exp(-2 pi i jk / N), inverse (INVERSE) x[j] exp(+2 pi i jk / N), unscaled.
// N = M * B, M odd, B = 2^A: block b of M values gets the subsequence
// x[j B + bitreverse(b)], j < M, and its M-point DFT; A radix-2 stages combine them.
template <int N, bool INVERSE>
__device__ __forceinline__ void fast_fft(float (&re)[N], float (&im)[N],
                                         const float* __restrict__ tw_re,
                                         const float* __restrict__ tw_im) {
    constexpr int M = fast_odd_part(N);
    constexpr int B = N / M;
    constexpr int bits = fast_log2(B);
    float pr[N];
    float pi[N];
#pragma unroll
    for (int p = 0; p < N; ++p) {
        const int src = (p % M) * B + fast_bit_reverse(p / M, bits);
        pr[p] = re[src];
        pi[p] = im[src];
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
#pragma unroll
        for (int k = 0; k < M; ++k) {
            float sr = 0.0f;
            float si = 0.0f;
#pragma unroll
            for (int j = 0; j < M; ++j) {
                const int t = ((j * k) % M) * B;        // exp(-2 pi i jk / M)
                const float xr = pr[b * M + j];
                const float xi = pi[b * M + j];
                if (t == 0) {
                    sr += xr;
                    si += xi;
                } else {
                    const float wr = tw_re[t];
                    const float wi = INVERSE ? -tw_im[t] : tw_im[t];
                    sr += xr * wr - xi * wi;
                    si += xr * wi + xi * wr;
                }
            }
            re[b * M + k] = sr;
            im[b * M + k] = si;
        }
    }
    fast_stages<N, M, INVERSE>(re, im, tw_re, tw_im);
}

// Tree reduction over the N slots of a crop; every thread of the block calls
// it (it holds __syncthreads). Slot 0 ends with the minimum (OP 0, with the OR of
// `index`: flags) or the argmax, first index on ties (OP 1, with `index`).
template <int N, int OP>
__device__ __forceinline__ void fast_reduce(float* value, int* index, int lane) {
#pragma unroll
    for (int stride = fast_ceil_pow2(N) / 2; stride > 0; stride /= 2) {
        if (lane < stride && lane + stride < N) {
            const float v = value[lane + stride];
            if (OP == 0) {          // minimum
                if (v < value[lane]) {
                    value[lane] = v;
                }
                index[lane] |= index[lane + stride];
            } else {                // argmax, first index on ties
                const int i = index[lane + stride];
                if (v > value[lane] || (v == value[lane] && i < index[lane])) {
                    value[lane] = v;
                    index[lane] = i;
                }
            }
        }
        __syncthreads();
    }
}

template <typename T, int N>
__global__ void fast_correlate(const T* __restrict__ frames, int fy, int fx,
                               const long long* __restrict__ peaks, int n_peaks, long long n_crops,
                               const float* __restrict__ filt,
                               const float* __restrict__ twiddles, int use_log,
                               int write_maps,
                               float* __restrict__ maps, int* __restrict__ out_centers,
                               float* __restrict__ out_refineds, float* __restrict__ out_heights,
                               float* __restrict__ out_elevations, bool* __restrict__ bad) {
    constexpr int P = N / 2;        // threads per crop
    constexpr int H = N / 2 + 1;    // columns of the half spectrum
    constexpr int SM = N + 1;       // row stride of the map
    extern __shared__ __align__(16) float fast_shared[];
    float* tw_re = fast_shared;
    float* tw_im = fast_shared + N;

    const int lane = threadIdx.x % P;
    const int slot = threadIdx.x / P;
    float* spec_re = fast_shared + 2 * N + slot * fast_crop_floats(N);
    float* spec_im = spec_re + N * H;
    float* map = spec_re;           // the map replaces the spectrum (step 4)
    float* red_value = spec_re + 2 * N * H;
    int* red_index = reinterpret_cast<int*>(red_value + P);
    float* scalars = red_value + 2 * P;  // refined y, refined x

    const long long job = (long long)blockIdx.x * (blockDim.x / P) + slot;
    const bool active = job < n_crops;
    const long long n = active ? job / n_peaks : 0;
    const int p = active ? (int)(job % n_peaks) : 0;
    const long long y0 = active ? peaks[2 * p] - N / 2 : 0;
    const long long x0 = active ? peaks[2 * p + 1] - N / 2 : 0;
    const int ya = 2 * lane;        // this thread's two rows
    const int yb = 2 * lane + 1;

    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        tw_re[i] = twiddles[2 * i];
        tw_im[i] = twiddles[2 * i + 1];
    }

    // 1. crop: columns `lane` and `lane + P` of every row (coalesced reads), min
    //    and non-finite flag (the slots of a block's missing crops get zeros)
    float local_min = fast_infinity();
    int local_bad = 0;
    {
        const T* frame = frames + n * (long long)fy * fx;
        for (int y = 0; y < N; ++y) {
            const long long yy = y0 + y;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int x = lane + half * P;
                const long long xx = x0 + x;
                float v = 0.0f;
                if (active && yy >= 0 && yy < fy && xx >= 0 && xx < fx) {
                    v = (float)frame[yy * fx + xx];
                }
                map[y * SM + x] = v;
                if (!isfinite(v)) {
                    local_bad = 1;
                } else if (v < local_min) {
                    local_min = v;
                }
            }
        }
    }
    red_value[lane] = local_min;
    red_index[lane] = local_bad;
    __syncthreads();
    fast_reduce<P, 0>(red_value, red_index, lane);
    const bool do_log = use_log && active && red_index[0] == 0;
    const bool any_bad = red_index[0] != 0;
    const double lowest = (double)red_value[0];

    // 2. rows ya and yb, log-scaled, as one complex row a + i b; its DFT Z splits
    //    into A[k] = (Z[k] + conj Z[-k]) / 2 and B[k] = (Z[k] - conj Z[-k]) / 2i
    {
        float r[N];
        float q[N];
#pragma unroll
        for (int x = 0; x < N; ++x) {
            const float a = map[ya * SM + x];
            const float b = map[yb * SM + x];
            r[x] = do_log ? logf((float)(((double)a - lowest) + 1.0)) : a;
            q[x] = do_log ? logf((float)(((double)b - lowest) + 1.0)) : b;
        }
        fast_fft<N, false>(r, q, tw_re, tw_im);
        __syncthreads();            // all rows read: the half spectra overwrite them
#pragma unroll
        for (int k = 0; k < H; ++k) {
            const int m = (N - k) % N;
            spec_re[ya * H + k] = 0.5f * (r[k] + r[m]);
            spec_im[ya * H + k] = 0.5f * (q[k] - q[m]);
            spec_re[yb * H + k] = 0.5f * (q[k] + q[m]);
            spec_im[yb * H + k] = -0.5f * (r[k] - r[m]);
        }
    }
    __syncthreads();

    // 3. columns: thread `lane` >= 1 column `lane` of the half spectrum; thread 0
    //    columns 0 and N / 2, both real, as one complex column c0 + i cN. Each is
    //    transformed, multiplied by the filter (DC split off), transformed back.
    float mean = 0.0f;
    {
        float r[N];
        float q[N];
        if (lane == 0) {
#pragma unroll
            for (int y = 0; y < N; ++y) {
                r[y] = spec_re[y * H];
                q[y] = spec_re[y * H + N / 2];
            }
        } else {
#pragma unroll
            for (int y = 0; y < N; ++y) {
                r[y] = spec_re[y * H + lane];
                q[y] = spec_im[y * H + lane];
            }
        }
        fast_fft<N, false>(r, q, tw_re, tw_im);
        if (lane == 0) {
            // W = DFT(c0 + i cN): C0 = (W[k] + conj W[-k]) / 2 and CN = (W[k] - conj W[-k]) / 2i
            // are Hermitian; V = C0 F0 + i CN FN, with C0[0] F0[0] (the mean) taken out
#pragma unroll
            for (int k = 0; k <= N / 2; ++k) {
                const int m = (N - k) % N;
                const float c0r = 0.5f * (r[k] + r[m]);
                const float c0i = 0.5f * (q[k] - q[m]);
                const float cnr = 0.5f * (q[k] + q[m]);
                const float cni = -0.5f * (r[k] - r[m]);
                float vr[2];
                float vi[2];
#pragma unroll
                for (int side = 0; side < 2; ++side) {
                    const int kk = side == 0 ? k : m;
                    const float s = side == 0 ? 1.0f : -1.0f;   // C[-k] = conj C[k]
                    const float f0r = filt[2 * (kk * H)];
                    const float f0i = filt[2 * (kk * H) + 1];
                    const float fnr = filt[2 * (kk * H + N / 2)];
                    const float fni = filt[2 * (kk * H + N / 2) + 1];
                    float p0r = c0r * f0r - s * c0i * f0i;
                    float p0i = c0r * f0i + s * c0i * f0r;
                    const float pnr = cnr * fnr - s * cni * fni;
                    const float pni = cnr * fni + s * cni * fnr;
                    if (kk == 0) {
                        mean = p0r;
                        p0r = 0.0f;
                        p0i = 0.0f;
                    }
                    vr[side] = p0r - pni;
                    vi[side] = p0i + pnr;
                }
                r[k] = vr[0];
                q[k] = vi[0];
                r[m] = vr[1];
                q[m] = vi[1];
            }
        } else {
#pragma unroll
            for (int k = 0; k < N; ++k) {
                const float fr = filt[2 * (k * H + lane)];
                const float fi = filt[2 * (k * H + lane) + 1];
                const float pr = r[k] * fr - q[k] * fi;
                const float pi = r[k] * fi + q[k] * fr;
                r[k] = pr;
                q[k] = pi;
            }
        }
        fast_fft<N, true>(r, q, tw_re, tw_im);
        if (lane == 0) {
#pragma unroll
            for (int y = 0; y < N; ++y) {
                spec_re[y * H] = r[y];
                spec_im[y * H] = 0.0f;
                spec_re[y * H + N / 2] = q[y];
                spec_im[y * H + N / 2] = 0.0f;
            }
        } else {
#pragma unroll
            for (int y = 0; y < N; ++y) {
                spec_re[y * H + lane] = r[y];
                spec_im[y * H + lane] = q[y];
            }
        }
    }
    __syncthreads();

    // 4. rows ya and yb back as one complex row: Z[k] = A[k] + i B[k] over the
    //    full spectrum (A[-k] = conj A[k]); the real and imaginary parts of its
    //    inverse DFT are the two map rows. The first maximum of the two rows in C
    //    order is this thread's candidate.
    {
        float r[N];
        float q[N];
#pragma unroll
        for (int k = 0; k < H; ++k) {
            const float ar = spec_re[ya * H + k];
            const float ai = spec_im[ya * H + k];
            const float br = spec_re[yb * H + k];
            const float bi = spec_im[yb * H + k];
            r[k] = ar - bi;
            q[k] = ai + br;
            if (k > 0 && k < N / 2) {
                r[N - k] = ar + bi;
                q[N - k] = br - ai;
            }
        }
        fast_fft<N, true>(r, q, tw_re, tw_im);
        __syncthreads();            // all spectra read: the map overwrites them
        float best = r[0];
        int best_index = ya * N;
#pragma unroll
        for (int x = 0; x < N; ++x) {
            map[ya * SM + x] = r[x];
            if (r[x] > best) {
                best = r[x];
                best_index = ya * N + x;
            }
        }
#pragma unroll
        for (int x = 0; x < N; ++x) {
            map[yb * SM + x] = q[x];
            if (q[x] > best) {
                best = q[x];
                best_index = yb * N + x;
            }
        }
        red_value[lane] = best;
        red_index[lane] = best_index;
    }
    __syncthreads();
    fast_reduce<P, 1>(red_value, red_index, lane);
    const float best = red_value[0];
    const int best_index = red_index[0];
    const int cy = best_index / N;
    const int cx = best_index % N;

    // 5. refined position: centre of mass of the window minus its minimum
    if (lane == 0) {
        window_centroid(map, SM, N, N, cy, cx, &scalars[0], &scalars[1]);
    }
    if (active && write_maps) {
        float* out = maps + job * (long long)(N * N);
        for (int y = 0; y < N; ++y) {
            out[y * N + lane] = map[y * SM + lane];
            out[y * N + lane + P] = map[y * SM + lane + P];
        }
    }
    __syncthreads();

    // 6. elevation: the smallest slope (max - value) / d over pixels with d >= 1.5,
    //    over the thread's two rows (window.cuh)
    const double py = scalars[0];
    const double px = scalars[1];
    float slope_min;
    {
        SlopeSearch<float> search;
#pragma unroll
        for (int row = 0; row < 2; ++row) {
            const int y = row == 0 ? ya : yb;
            const double dy = (double)y - py;
            for (int x = 0; x < N; ++x) {
                const double dx = (double)x - px;
                search.offer(best - map[y * SM + x], dy * dy + dx * dx);
            }
        }
        slope_min = search.slope();
    }
    red_value[lane] = slope_min;
    red_index[lane] = 0;
    __syncthreads();
    fast_reduce<P, 0>(red_value, red_index, lane);

    if (active && lane == 0) {
        out_centers[2 * job] = (int)(cy + y0);
        out_centers[2 * job + 1] = (int)(cx + x0);
        out_refineds[2 * job] = (float)((double)scalars[0] + (double)y0);
        out_refineds[2 * job + 1] = (float)((double)scalars[1] + (double)x0);
        out_heights[job] = (float)((double)best + (double)mean);
        out_elevations[job] = fmaxf(0.0f, red_value[0]);
        bad[job] = any_bad;
    }
}

// Instantiations for nvcc (CI compiles this file without NVRTC's name expressions);
// NVRTC (__CUDACC_RTC__) compiles only the name expressions it is given.
#ifndef __CUDACC_RTC__
#define GPUCORR_FAST(T, N)                                                                     \
    template __global__ void fast_correlate<T, N>(const T*, int, int, const long long*, int,   \
                                                  long long, const float*, const float*, int,  \
                                                  int, float*,                                 \
                                                  int*, float*, float*, float*, bool*);
GPUCORR_FAST(unsigned short, 32)
GPUCORR_FAST(float, 32)
GPUCORR_FAST(unsigned short, 64)
GPUCORR_FAST(float, 16)
GPUCORR_FAST(float, 8)
GPUCORR_FAST(float, 4)
GPUCORR_FAST(unsigned short, 24)
GPUCORR_FAST(float, 30)
GPUCORR_FAST(float, 14)
GPUCORR_FAST(float, 6)
#endif  // __CUDACC_RTC__
