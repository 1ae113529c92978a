// gpucorr CUDA kernels: device functions shared by evaluate.cu and fast.cu.
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

#endif  // GPUCORR_WINDOW_CUH
