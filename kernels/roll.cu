// gpucorr CUDA kernels: rolling correlation maps for DFT upsampling.
//
// roll_to_origin<R>: out[y, b, x] = maps[b, (py + y) mod h, (px + x) mod w] with
//   (py, px) = positions[b], for a stack of B maps, each C-contiguous (h, w) of
//   compute type R (float or double); out is C-contiguous (h, B, w). It moves
//   each map's peak to sample (0, 0), laid out so that upsampling all maps is
//   one matrix product per axis. One thread per output element, consecutive
//   threads along x: reads and writes are contiguous runs of a map row.
//   This is the CPU kernel set's roll_to_origin (gpucorr/_numba.py) for the GPU.
//
// Self-contained for NVRTC: no host headers, CUDA built-ins only.

template <typename R>
__global__ void roll_to_origin(const R* __restrict__ maps, int n_maps, int h, int w,
                               const long long* __restrict__ positions,
                               R* __restrict__ out) {
    const long long total = (long long)h * n_maps * w;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int x = (int)(i % w);
        const long long rest = i / w;
        const int b = (int)(rest % n_maps);
        const int y = (int)(rest / n_maps);
        long long py = positions[2 * b] % h;
        long long px = positions[2 * b + 1] % w;
        if (py < 0) py += h;
        if (px < 0) px += w;
        const long long yy = (py + y) % h;
        const long long xx = (px + x) % w;
        out[i] = maps[((long long)b * h + yy) * w + xx];
    }
}

// Instantiations for nvcc (CI compiles this file without NVRTC's name expressions);
// NVRTC (__CUDACC_RTC__) compiles only the name expressions it is given.
#ifndef __CUDACC_RTC__
template __global__ void roll_to_origin<float>(const float*, int, int, int, const long long*,
                                               float*);
template __global__ void roll_to_origin<double>(const double*, int, int, int, const long long*,
                                                double*);
#endif  // __CUDACC_RTC__
