// gpucorr CUDA kernels: cropping and log scaling.
//
// crop_log<T, R>: one thread block per (frame, peak) pair of a batch. The block
//   copies the (h, w) square starting at peaks[p] - crop_size out of frame n
//   (frames: C-contiguous (N, fy, fx) of the frames' own dtype T, uint16
//   included), writes `fill[n]` where the square leaves the frame, converts to
//   the compute type R (float or double), flags the crop in `bad` when it holds
//   a NaN or an infinity, and, with do_log, replaces every value x by
//   log((x - min(crop)) + 1), the shift computed in double and rounded to R (the
//   minimum becomes exactly 1, however large it is).
//   Output: C-contiguous (N, P, h, w). A whole frame is the crop of size
//   (fy, fx) at peak (0, 0) with crop_size 0.
//   This is the CPU kernel set's crop_log (gpucorr/_numba.py) for the GPU.
//
// Self-contained for NVRTC: no host headers, CUDA built-ins only.

template <typename R> __device__ __forceinline__ R positive_infinity();
template <> __device__ __forceinline__ float positive_infinity<float>() {
    return __int_as_float(0x7f800000);
}
template <> __device__ __forceinline__ double positive_infinity<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

__device__ __forceinline__ bool finite_value(float v) { return isfinite(v); }
__device__ __forceinline__ bool finite_value(double v) { return isfinite(v); }
__device__ __forceinline__ float log_value(float v) { return logf(v); }
__device__ __forceinline__ double log_value(double v) { return log(v); }

template <typename T, typename R>
__global__ void crop_log(const T* __restrict__ frames, int fy, int fx,
                         const long long* __restrict__ peaks, int n_peaks, int crop_size,
                         int h, int w, int do_log, const R* __restrict__ fill,
                         R* __restrict__ out, bool* __restrict__ bad) {
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    R* shared_min = reinterpret_cast<R*>(shared_bytes);
    int* shared_bad = reinterpret_cast<int*>(shared_min + blockDim.x);

    const long long job = blockIdx.x;
    const long long n = job / n_peaks;
    const int p = (int)(job % n_peaks);
    const long long y0 = peaks[2 * p] - crop_size;
    const long long x0 = peaks[2 * p + 1] - crop_size;
    const T* frame = frames + n * (long long)fy * fx;
    R* crop = out + job * (long long)h * w;
    const int size = h * w;

    R local_min = positive_infinity<R>();
    int local_bad = 0;
    for (int i = threadIdx.x; i < size; i += blockDim.x) {
        const long long yy = y0 + i / w;
        const long long xx = x0 + i % w;
        R v = fill[n];
        if (yy >= 0 && yy < fy && xx >= 0 && xx < fx) {
            v = (R)frame[yy * fx + xx];
        }
        crop[i] = v;
        if (!finite_value(v)) {
            local_bad = 1;
        } else if (v < local_min) {
            local_min = v;
        }
    }
    shared_min[threadIdx.x] = local_min;
    shared_bad[threadIdx.x] = local_bad;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            if (shared_min[threadIdx.x + stride] < shared_min[threadIdx.x]) {
                shared_min[threadIdx.x] = shared_min[threadIdx.x + stride];
            }
            shared_bad[threadIdx.x] |= shared_bad[threadIdx.x + stride];
        }
        __syncthreads();
    }
    const bool any_bad = shared_bad[0] != 0;
    if (threadIdx.x == 0) {
        bad[job] = any_bad;
    }
    if (do_log && !any_bad) {
        // (x - min) + 1 in double, as the CPU kernel does: min - 1 would round to min
        // for |min| >= 2^24 in float (2^53 in double), and log(0) be -inf at the minimum
        const double lowest = (double)shared_min[0];
        for (int i = threadIdx.x; i < size; i += blockDim.x) {
            crop[i] = log_value((R)(((double)crop[i] - lowest) + 1.0));
        }
    }
}

// Instantiations for nvcc (CI compiles this file without NVRTC's name expressions);
// NVRTC (__CUDACC_RTC__) compiles only the name expressions it is given.
#ifndef __CUDACC_RTC__
template __global__ void crop_log<unsigned short, float>(
    const unsigned short*, int, int, const long long*, int, int, int, int, int, const float*,
    float*, bool*);
template __global__ void crop_log<float, float>(
    const float*, int, int, const long long*, int, int, int, int, int, const float*, float*,
    bool*);
template __global__ void crop_log<double, double>(
    const double*, int, int, const long long*, int, int, int, int, int, const double*,
    double*, bool*);
#endif  // __CUDACC_RTC__
