// gpucorr CUDA kernels: evaluation of correlation maps.
//
// evaluate<R>: one thread block per correlation map (a stack of M maps, each
//   C-contiguous (h, w), compute type R = float or double). Map m belongs to
//   peak m % n_peaks; results are shifted by peaks[p] - crop_size into frame
//   coordinates. Per map it computes
//   * the integer argmax, the first maximum in C order on ties (as numpy.argmax);
//   * the refined position: centre of mass of the (2r+1)^2 window around the
//     argmax minus the window's minimum, r = min(2, distance to the map edge);
//     the integer position where r <= 0 or the window is flat;
//   * the height: the maximum plus offsets[m] (the map's mean, removed before
//     the inverse FFT), in double precision;
//   * the elevation: min over pixels at distance d >= 1.5 from the refined
//     position of float((max - value) / d), clipped at 0 (inf where no pixel
//     counts).
//   This is the CPU kernel set's evaluate (gpucorr/_numba.py) for the GPU.
//
// Self-contained for NVRTC once gpucorr._cuda.kernel_source() has pasted in
// window.cuh: no host headers, CUDA built-ins only.

#include "window.cuh"

template <typename R>
__global__ void evaluate(const R* __restrict__ corrs, int h, int w,
                         const long long* __restrict__ peaks, int n_peaks, int crop_size,
                         const double* __restrict__ offsets, int* __restrict__ out_centers,
                         float* __restrict__ out_refineds, float* __restrict__ out_heights,
                         float* __restrict__ out_elevations) {
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    R* shared_value = reinterpret_cast<R*>(shared_bytes);
    int* shared_index = reinterpret_cast<int*>(shared_value + blockDim.x);
    float* shared_slope = reinterpret_cast<float*>(shared_index + blockDim.x);
    __shared__ float refined[2];

    const long long m = blockIdx.x;
    const R* corr = corrs + m * (long long)h * w;
    const int size = h * w;

    // argmax, first index on ties
    R best = corr[0];
    int best_index = 0;
    for (int i = threadIdx.x; i < size; i += blockDim.x) {
        const R v = corr[i];
        if (v > best || (v == best && i < best_index)) {
            best = v;
            best_index = i;
        }
    }
    shared_value[threadIdx.x] = best;
    shared_index[threadIdx.x] = best_index;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            const R v = shared_value[threadIdx.x + stride];
            const int i = shared_index[threadIdx.x + stride];
            if (v > shared_value[threadIdx.x] ||
                (v == shared_value[threadIdx.x] && i < shared_index[threadIdx.x])) {
                shared_value[threadIdx.x] = v;
                shared_index[threadIdx.x] = i;
            }
        }
        __syncthreads();
    }
    best = shared_value[0];
    best_index = shared_index[0];
    const int cy = best_index / w;
    const int cx = best_index % w;

    // centre of mass of the window minus its minimum (one thread: at most 25 pixels)
    if (threadIdx.x == 0) {
        window_centroid(corr, w, h, w, cy, cx, &refined[0], &refined[1]);
    }
    __syncthreads();

    // elevation: the smallest slope (max - value) / d over pixels with d >= 1.5
    const double py = refined[0];
    const double px = refined[1];
    SlopeSearch<R> search;
    for (int i = threadIdx.x; i < size; i += blockDim.x) {
        const double dy = (double)(i / w) - py;
        const double dx = (double)(i % w) - px;
        search.offer(best - corr[i], dy * dy + dx * dx);
    }
    shared_slope[threadIdx.x] = search.slope();
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride && shared_slope[threadIdx.x + stride] < shared_slope[threadIdx.x]) {
            shared_slope[threadIdx.x] = shared_slope[threadIdx.x + stride];
        }
        __syncthreads();
    }

    if (threadIdx.x == 0) {
        const int p = (int)(m % n_peaks);
        const long long oy = peaks[2 * p] - crop_size;
        const long long ox = peaks[2 * p + 1] - crop_size;
        out_centers[2 * m] = (int)(cy + oy);
        out_centers[2 * m + 1] = (int)(cx + ox);
        out_refineds[2 * m] = (float)((double)refined[0] + (double)oy);
        out_refineds[2 * m + 1] = (float)((double)refined[1] + (double)ox);
        out_heights[m] = (float)((double)best + offsets[m]);
        out_elevations[m] = fmaxf(0.0f, shared_slope[0]);
    }
}

// Instantiations for nvcc (CI compiles this file without NVRTC's name expressions);
// NVRTC (__CUDACC_RTC__) compiles only the name expressions it is given.
#ifndef __CUDACC_RTC__
template __global__ void evaluate<float>(const float*, int, int, const long long*, int, int,
                                         const double*, int*, float*, float*, float*);
template __global__ void evaluate<double>(const double*, int, int, const long long*, int, int,
                                          const double*, int*, float*, float*, float*);
#endif  // __CUDACC_RTC__
