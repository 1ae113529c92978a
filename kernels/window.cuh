// gpucorr CUDA kernels: device code shared by evaluate.cu and fast.cu.
//
// A header, included as `#include "window.cuh"`: nvcc finds it beside the
// sources, and gpucorr._cuda.kernel_source() pastes it in place of the line for
// NVRTC and the CPU emulator, which get one self-contained text.
// Self-contained for NVRTC: no host headers, CUDA built-ins only.
#ifndef GPUCORR_WINDOW_CUH
#define GPUCORR_WINDOW_CUH

// Refined position of the maximum (cy, cx) of an (h, w) map stored with row
// stride `stride`: the centre of mass of the (2r+1)^2 window around it minus
// the window's minimum, r = min(2, distance to the map's edge), summed in
// double; the integer position where r <= 0 or the window is flat. One thread
// (at most 25 pixels). This is the CPU kernel set's refinement
// (gpucorr/_numba.py) for the GPU.
template <typename R>
__device__ __forceinline__ void window_centroid(const R* map, int stride, int h, int w, int cy,
                                                int cx, float* ry, float* rx) {
    int r = 2;
    r = min(r, min(cy, cx));
    r = min(r, min(h - cy - 1, w - cx - 1));
    *ry = (float)cy;
    *rx = (float)cx;
    if (r <= 0) {
        return;
    }
    R lowest = map[(cy - r) * stride + (cx - r)];
    for (int yy = cy - r; yy <= cy + r; ++yy) {
        for (int xx = cx - r; xx <= cx + r; ++xx) {
            lowest = min(lowest, map[yy * stride + xx]);
        }
    }
    double s = 0.0, sy = 0.0, sx = 0.0;
    for (int dy = -r; dy <= r; ++dy) {
        for (int dx = -r; dx <= r; ++dx) {
            const double v = (double)(map[(cy + dy) * stride + (cx + dx)] - lowest);
            s += v;
            sy += v * dy;
            sx += v * dx;
        }
    }
    if (s != 0.0) {
        *ry = (float)(cy + sy / s);
        *rx = (float)(cx + sx / s);
    }
}

// The smallest slope (max - value) / d over the pixels at distance d >= 1.5 from
// a point, found without a square root or division per pixel: every
// max - value is >= 0, so the smallest slope has the smallest (max - value)^2 / d^2,
// compared as (max - value)^2 d'^2 < (max' - value')^2 d^2 in double; only the
// winner's slope is computed, as float((double)(max - value) / sqrt(d^2)). NaN
// differences are skipped. One per thread; offer() each pixel, then slope()
// (infinity where no pixel counted), and take the minimum over the threads.
// (Where two slopes tie to rounding, either may win: they differ by an ulp or so.)
template <typename R>
struct SlopeSearch {
    double num = 0.0;   // (max - value)^2 of the candidate
    double d2 = 0.0;    // its d^2; 0: no candidate yet
    R diff = 0;         // its max - value

    __device__ __forceinline__ void offer(R max_minus_value, double dist2) {
        if (dist2 >= 2.25 && max_minus_value == max_minus_value) {
            const double a = (double)max_minus_value;
            const double n = a * a;
            if (d2 == 0.0 || n * d2 < num * dist2) {
                num = n;
                d2 = dist2;
                diff = max_minus_value;
            }
        }
    }

    __device__ __forceinline__ float slope() const {
        return d2 == 0.0 ? __int_as_float(0x7f800000) : (float)((double)diff / sqrt(d2));
    }
};

#endif  // GPUCORR_WINDOW_CUH
