// gpucorr CUDA kernels: per-frame disk detection, the maxima of correlation maps and
// their evaluation (gpucorr.backends._cuda_disks launches them).
//
// find_maxima<R>: for N maps (C-contiguous (h, w), R = float or double), blocks stride
//   over the maps (one block per map where the grid has N blocks). A pixel p = (y, x) at
//   least `edge` pixels inside the map is a *maximum* if no other pixel q of the map
//   within the distance s = `spacing` (dy^2 + dx^2 <= s^2, in double) beats it: q beats
//   p if value[q] > value[p], or value[q] == value[p] and q comes before p in C order.
//   Of the maxima, ranked by value descending, ties in C order, the first k are kept;
//   where min_relative > 0 and the largest maximum `top` is positive, only those of
//   value >= min_relative * top (in double). Out: out_centers (N, k, 2) (y, x) in rank
//   order, -1 beyond the count; out_values (N, k) the map values, NaN beyond the count;
//   out_counts (N,).
//   1. The block tests the interior pixels in tiles of GPUCORR_MAXIMA_PER_THREAD
//      pixels a thread (coalesced: pixel base + j blockDim.x + threadIdx.x), each
//      against its up to 8 neighbours within s only: that is cheap and most pixels
//      fail it. A block-wide scan of the per-thread counts packs the candidates of
//      the tile into a buffer of `capacity` (value, C index) entries (a power of two),
//      in rounds when they do not all fit.
//   2. The candidates just packed get the full test over the disk of radius s (where
//      floor(s) >= 2), one thread per candidate: so no thread waits on a neighbour's
//      disk. Those that fail are marked empty (index -1).
//   3. When the buffer cannot take the rest of a tile, it is sorted by rank (bitonic,
//      block-wide; empty entries last) and cut to its first k maxima: an entry ranked
//      below k others can never be among the first k. With capacity >= 2 k + blockDim.x
//      (the launcher's choice) every round packs at least blockDim.x candidates, so the
//      result is exact for any number of candidates: the buffer bounds memory, not
//      the count. At the end the buffer is sorted and cut once more, and the relative
//      cut applied (the list is ranked, so a prefix passes).
//   The buffer lies in the dynamic shared memory where `in_shared` (capacity (sizeof(R)
//   + 4) bytes, then blockDim.x ints of scan space), else `capacity` entries a block of
//   scratch_values / scratch_index (and only the scan space is shared).
//   This is the CPU kernel set's find_maxima (gpucorr/backends/_numba_disks.py) for
//   the GPU, with the same results. NaN pixels never beat a pixel nor are beaten (so
//   each is a maximum) and rank after every number, ties in C order: as on the CPU for
//   an all-NaN map (a bad frame); where NaN and numbers mix, the CPU's insertion ranks
//   the NaN entries by when they come, and the two may differ.
//
// evaluate_at<R>: for N maps, k centres each (centers (N, k, 2) int32, the first
//   counts[n] of map n valid), one block per map (blocks stride over the maps): for a
//   valid centre, as evaluate.cu for a correlation maximum at that centre
//   * the refined position: window_centroid (window.cuh), the 5x5 centre of mass;
//   * the height: value + offsets[n] in double, stored as float;
//   * the elevation: min over pixels with 1.5 <= d < `radius` from the refined position
//     of float((value at the centre - value) / d), clipped at 0 (a pixel above the
//     centre's value in that range gives 0; infinity where no pixel counts); radius may
//     be infinite (every pixel of the map).
//   Entries beyond the count are NaN. Valid centres must lie inside the map.
//
// Self-contained for NVRTC once gpucorr._cuda.kernel_source() has pasted in
// window.cuh: no host headers, CUDA built-ins only.

#include "window.cuh"

// pixels each thread tests per tile (bits of one unsigned int)
#define GPUCORR_MAXIMA_PER_THREAD 8

namespace maxima_detail {

template <typename R>
__device__ __forceinline__ R quiet_nan();

template <>
__device__ __forceinline__ float quiet_nan<float>() {
    return __int_as_float(0x7fc00000);
}

template <>
__device__ __forceinline__ double quiet_nan<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// Whether entry a = (va, ia) ranks before entry b: empty entries (index < 0) last,
// then NaN values, numbers by value descending; ties by C index ascending.
template <typename R>
__device__ __forceinline__ bool ranks_before(R va, int ia, R vb, int ib) {
    if (ib < 0) return ia >= 0;
    if (ia < 0) return false;
    const bool nan_a = va != va;
    const bool nan_b = vb != vb;
    if (nan_a || nan_b) return nan_a == nan_b ? ia < ib : nan_b;
    return va > vb || (va == vb && ia < ib);
}

// Whether q = value at (y + dy, x + dx) beats v = value at (y, x) (see the header).
template <typename R>
__device__ __forceinline__ bool beats(R q, R v, int dy, int dx) {
    return q > v || (q == v && (dy < 0 || (dy == 0 && dx < 0)));
}

// Whether no neighbour of (y, x) in its 3x3 window within the distance s beats it
// (the diagonal ones where s^2 >= 2).
template <typename R>
__device__ bool beats_neighbours(const R* __restrict__ m, int h, int w, int y, int x,
                                 bool diagonals) {
    const R v = m[(long long)y * w + x];
    for (int dy = -1; dy <= 1; ++dy) {
        const int yy = y + dy;
        if (yy < 0 || yy >= h) continue;
        for (int dx = -1; dx <= 1; ++dx) {
            const int xx = x + dx;
            if (xx < 0 || xx >= w || (dy == 0 && dx == 0)) continue;
            if (dy != 0 && dx != 0 && !diagonals) continue;
            if (beats(m[(long long)yy * w + xx], v, dy, dx)) return false;
        }
    }
    return true;
}

// Whether no pixel of the disk of radius s around (y, x) outside its 3x3 window beats
// it (r = floor(s), capped at h + w; s2 = s * s).
template <typename R>
__device__ bool beats_disk(const R* __restrict__ m, int h, int w, int y, int x, int r,
                           double s2) {
    const R v = m[(long long)y * w + x];
    const int y0 = max(y - r, 0), y1 = min(y + r, h - 1);
    const int x0 = max(x - r, 0), x1 = min(x + r, w - 1);
    for (int yy = y0; yy <= y1; ++yy) {
        const int dy = yy - y;
        const long long dy2 = (long long)dy * dy;
        for (int xx = x0; xx <= x1; ++xx) {
            const int dx = xx - x;
            if (dy >= -1 && dy <= 1 && dx >= -1 && dx <= 1) continue;
            if ((double)(dy2 + (long long)dx * dx) > s2) continue;
            if (beats(m[(long long)yy * w + xx], v, dy, dx)) return false;
        }
    }
    return true;
}

// Exclusive prefix sum of each thread's c over the block (Hillis-Steele in `scan`,
// blockDim.x ints); returns the block's total. All threads call it.
__device__ int block_scan(int* scan, int c, int* exclusive) {
    const int tid = threadIdx.x;
    scan[tid] = c;
    __syncthreads();
    for (int offset = 1; offset < (int)blockDim.x; offset <<= 1) {
        const int add = tid >= offset ? scan[tid - offset] : 0;
        __syncthreads();
        scan[tid] += add;
        __syncthreads();
    }
    *exclusive = scan[tid] - c;
    const int total = scan[blockDim.x - 1];
    __syncthreads();  // scan[] is written again by the next call
    return total;
}

// Sorts the first n entries (n a power of two) by rank, bitonic, block-wide. All
// threads call it; it ends with a barrier.
template <typename R>
__device__ void bitonic_sort(R* values, int* index, int n) {
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
                const int i = 2 * t - (t & (stride - 1));
                const int j = i + stride;
                const R vi = values[i];
                const R vj = values[j];
                const int ii = index[i];
                const int ij = index[j];
                const bool first = (i & size) == 0;  // this half sorts best first
                if (first ? ranks_before(vj, ij, vi, ii) : ranks_before(vi, ii, vj, ij)) {
                    values[i] = vj;
                    values[j] = vi;
                    index[i] = ij;
                    index[j] = ii;
                }
            }
            __syncthreads();
        }
    }
}

// Sorts the buffer's `count` entries by rank and cuts them to the first k non-empty
// ones; returns the new count. All threads call it (after a barrier that follows the
// last writes to the buffer); it ends with a barrier.
template <typename R>
__device__ int prune(R* values, int* index, int count, int k, int* boundary) {
    if (count == 0) return 0;
    int n = 1;
    while (n < count) n <<= 1;
    for (int i = count + threadIdx.x; i < n; i += blockDim.x) index[i] = -1;
    if (threadIdx.x == 0) *boundary = 0;
    __syncthreads();
    bitonic_sort(values, index, n);
    // the non-empty entries are now a prefix: its end has one writer
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        if (index[i] >= 0 && (i + 1 == n || index[i + 1] < 0)) *boundary = i + 1;
    }
    __syncthreads();
    const int valid = *boundary;
    __syncthreads();  // boundary is written again
    return min(valid, k);
}

}  // namespace maxima_detail

template <typename R>
__global__ void find_maxima(const R* __restrict__ maps, int n_maps, int h, int w, int k,
                            double spacing, double min_relative, int edge, int capacity,
                            R* __restrict__ scratch_values, int* __restrict__ scratch_index,
                            int in_shared, int* __restrict__ out_centers,
                            R* __restrict__ out_values, int* __restrict__ out_counts) {
    using namespace maxima_detail;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    __shared__ int boundary;

    R* values;
    int* index;
    int* scan;
    if (in_shared) {
        values = reinterpret_cast<R*>(shared_bytes);
        index = reinterpret_cast<int*>(values + capacity);
        scan = index + capacity;
    } else {
        values = scratch_values + (long long)blockIdx.x * capacity;
        index = scratch_index + (long long)blockIdx.x * capacity;
        scan = reinterpret_cast<int*>(shared_bytes);
    }

    const int tid = threadIdx.x;
    const int nt = blockDim.x;
    const double s2 = spacing * spacing;
    const int r = spacing >= (double)(h + w) ? h + w : (int)floor(spacing);
    const bool diagonals = s2 >= 2.0;
    const long long hi = (long long)h - 2LL * edge;
    const long long wi = (long long)w - 2LL * edge;
    const long long n_in = (hi > 0 && wi > 0) ? hi * wi : 0;
    const int width = wi > 0 ? (int)wi : 1;  // of the interior
    const long long per_tile = (long long)nt * GPUCORR_MAXIMA_PER_THREAD;

    for (long long n = blockIdx.x; n < n_maps; n += gridDim.x) {
        const R* m = maps + n * h * w;
        int count = 0;  // entries in the buffer (the same in every thread)

        for (long long base = 0; base < n_in; base += per_tile) {
            // 1. the 3x3 test of this thread's pixels of the tile
            unsigned int mask = 0;
            int c = 0;
            for (int j = 0; j < GPUCORR_MAXIMA_PER_THREAD; ++j) {
                const long long lin = base + (long long)j * nt + tid;
                if (lin < n_in) {
                    const int y = edge + (int)lin / width;  // lin < h w < 2^31
                    const int x = edge + (int)lin % width;
                    if (beats_neighbours(m, h, w, y, x, diagonals)) {
                        mask |= 1u << j;
                        ++c;
                    }
                }
            }
            int first = 0;
            const int total = block_scan(scan, c, &first);

            // packed in rounds: candidates first..first + c - 1 of the tile are this thread's
            int written = 0;
            while (written < total) {
                if (count + (total - written) > capacity) {
                    count = prune(values, index, count, k, &boundary);  // 3.
                }
                const int take = min(capacity - count, total - written);
                int e = first;
                for (int j = 0; j < GPUCORR_MAXIMA_PER_THREAD; ++j) {
                    if (!(mask & (1u << j))) continue;
                    if (e >= written && e < written + take) {
                        const long long lin = base + (long long)j * nt + tid;
                        const int y = edge + (int)lin / width;
                        const int x = edge + (int)lin % width;
                        const int slot = count + (e - written);
                        values[slot] = m[(long long)y * w + x];
                        index[slot] = y * w + x;
                    }
                    ++e;
                }
                __syncthreads();
                // 2. the full disk test of the candidates just packed
                if (r >= 2) {
                    for (int i = count + tid; i < count + take; i += nt) {
                        const int p = index[i];
                        if (!beats_disk(m, h, w, p / w, p % w, r, s2)) index[i] = -1;
                    }
                }
                __syncthreads();
                count += take;
                written += take;
            }
        }

        // the ranked maxima, the relative cut
        count = prune(values, index, count, k, &boundary);
        if (tid == 0) boundary = count;
        __syncthreads();
        if (min_relative > 0.0 && count > 0 && (double)values[0] > 0.0) {
            const double threshold = min_relative * (double)values[0];
            // numbers fail from some rank on (NaN, ranked after them, never fails):
            // the first failure has one writer
            for (int i = tid; i < count; i += nt) {
                const bool fails = (double)values[i] < threshold;
                if (fails && (i == 0 || !((double)values[i - 1] < threshold))) boundary = i;
            }
        }
        __syncthreads();
        const int kept = boundary;
        const long long row = n * k;
        for (int i = tid; i < k; i += nt) {
            if (i < kept) {
                const int p = index[i];
                out_centers[2 * (row + i)] = p / w;
                out_centers[2 * (row + i) + 1] = p % w;
                out_values[row + i] = values[i];
            } else {
                out_centers[2 * (row + i)] = -1;
                out_centers[2 * (row + i) + 1] = -1;
                out_values[row + i] = quiet_nan<R>();
            }
        }
        if (tid == 0) out_counts[n] = kept;
        __syncthreads();  // the buffer and boundary serve the next map
    }
}

template <typename R>
__global__ void evaluate_at(const R* __restrict__ maps, int n_maps, int h, int w, int k,
                            const int* __restrict__ centers, const int* __restrict__ counts,
                            const double* __restrict__ offsets, double radius,
                            float* __restrict__ out_refineds, float* __restrict__ out_heights,
                            float* __restrict__ out_elevations) {
    using namespace maxima_detail;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    float* shared_slope = reinterpret_cast<float*>(shared_bytes);

    const int tid = threadIdx.x;
    const int nt = blockDim.x;
    const double r_max2 = radius * radius;
    const double reach = fabs(radius);  // the box half-edge (NaN: the whole map)
    const float not_a_number = quiet_nan<float>();

    for (long long n = blockIdx.x; n < n_maps; n += gridDim.x) {
        const R* m = maps + n * h * w;
        const int kept = max(0, min(counts[n], k));
        const long long row = n * k;

        // refined positions and heights, one thread a centre
        for (int i = tid; i < k; i += nt) {
            if (i < kept) {
                const int cy = centers[2 * (row + i)];
                const int cx = centers[2 * (row + i) + 1];
                float ry, rx;
                window_centroid(m, w, h, w, cy, cx, &ry, &rx);
                out_refineds[2 * (row + i)] = ry;
                out_refineds[2 * (row + i) + 1] = rx;
                out_heights[row + i] = (float)((double)m[(long long)cy * w + cx] + offsets[n]);
            } else {
                out_refineds[2 * (row + i)] = not_a_number;
                out_refineds[2 * (row + i) + 1] = not_a_number;
                out_heights[row + i] = not_a_number;
                out_elevations[row + i] = not_a_number;
            }
        }
        __syncthreads();  // the refined positions are read back by every thread

        // elevations, block-wide a centre, over the box around the refined position
        // that holds every pixel with d < radius (the whole map for an infinite radius)
        for (int i = 0; i < kept; ++i) {
            const R best = m[(long long)centers[2 * (row + i)] * w + centers[2 * (row + i) + 1]];
            const double py = out_refineds[2 * (row + i)];
            const double px = out_refineds[2 * (row + i) + 1];
            const int y0 = (int)fmax(0.0, floor(py - reach));
            const int y1 = (int)fmin(h - 1.0, ceil(py + reach));
            const int x0 = (int)fmax(0.0, floor(px - reach));
            const int x1 = (int)fmin(w - 1.0, ceil(px + reach));
            const int bw = x1 >= x0 ? x1 - x0 + 1 : 0;
            const int size = y1 >= y0 ? (y1 - y0 + 1) * bw : 0;  // <= h w < 2^31
            SlopeSearch<R> search;
            bool above = false;  // a pixel in range above the centre's value: slope < 0
            for (int j = tid; j < size; j += nt) {
                const int y = y0 + j / bw;
                const int x = x0 + j % bw;
                const double dy = (double)y - py;
                const double dx = (double)x - px;
                const double d2 = dy * dy + dx * dx;
                if (!(d2 >= 2.25) || d2 >= r_max2) continue;  // NaN d2: skipped
                const R diff = best - m[(long long)y * w + x];
                if (diff < 0) {
                    above = true;
                } else {
                    search.offer(diff, d2);
                }
            }
            shared_slope[tid] = above ? -1.0f : search.slope();
            __syncthreads();
            for (int stride = nt / 2; stride > 0; stride /= 2) {
                if (tid < stride && shared_slope[tid + stride] < shared_slope[tid]) {
                    shared_slope[tid] = shared_slope[tid + stride];
                }
                __syncthreads();
            }
            if (tid == 0) out_elevations[row + i] = fmaxf(0.0f, shared_slope[0]);
            __syncthreads();  // shared_slope is written again
        }
    }
}

// Instantiations for nvcc (CI compiles this file without NVRTC's name expressions);
// NVRTC (__CUDACC_RTC__) compiles only the name expressions it is given.
#ifndef __CUDACC_RTC__
template __global__ void find_maxima<float>(const float*, int, int, int, int, double, double,
                                            int, int, float*, int*, int, int*, float*, int*);
template __global__ void find_maxima<double>(const double*, int, int, int, int, double, double,
                                             int, int, double*, int*, int, int*, double*, int*);
template __global__ void evaluate_at<float>(const float*, int, int, int, int, const int*,
                                            const int*, const double*, double, float*, float*,
                                            float*);
template __global__ void evaluate_at<double>(const double*, int, int, int, int, const int*,
                                             const int*, const double*, double, float*, float*,
                                             float*);
#endif  // __CUDACC_RTC__
