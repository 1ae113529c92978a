// gpucorr CUDA kernels: DFT upsampling, the maximum of each correlation map's
// trigonometric interpolant near a position.
//
// upsample<R>: for B maps (C-contiguous (h, w), compute type R = float or double) and
//   Q integer positions per map (positions (B, Q, 2), int64), one thread block per
//   (map, position) job (blocks stride over the jobs), all arithmetic in double:
//   1. the search region: the interpolant on a u x u grid of spacing 1 / factor
//      around the position, rows[a][x] = sum_y grid_y[a][(y - py) mod h] m[y][x]
//      (y ascending), then grid[a][c] = sum_x rows[a][x] grid_x[c][(x - px) mod w]
//      (x ascending), one thread per output;
//   2. thread 0 ranks the grid's local maxima (>= each of their up to 8
//      neighbours), largest first, ties in C order, and keeps `candidates`;
//   3. from each, Newton's method with a trust region on the interpolant (value,
//      gradient and Hessian from the kernel rows of table_y / table_x: sums over
//      the table rows in order, then over y, then over x, each ascending) climbs
//      to the maximum of its basin inside the region;
//   4. the candidate with the largest value wins (the earlier on an exact tie);
//      out[b][q] = position + offset of the maximum, as float.
//   Every sum of a job runs in a fixed order inside its block, so a result does
//   not depend on how many maps are launched together. This is the CPU kernel
//   set's upsample (gpucorr/_numba.py) for the GPU, with the same sums in the
//   same order; gpucorr._pipeline.upsample_positions states the rule.
//   Scratch per block: rows (u w), grid (u u), coefs (3 * 2 k1), ky (3 h), kx (3 w),
//   cols (3 w) doubles with k1 = max(h, w) / 2 + 1, then u u bytes of local-maximum
//   flags (gpucorr._cuda.upsample_scratch): the dynamic shared memory where
//   `in_shared` (it fits), else `scratch_per_block` doubles of `scratch` per block.
//
// Self-contained for NVRTC: no host headers, CUDA built-ins only.

#define GPUCORR_MAX_CANDIDATES 16

namespace upsample_detail {

constexpr double kPi = 3.141592653589793;

// rows[i][a], i = 0, 1, 2: the i-th derivative of D(t - a), a < n, from the table
// [cos(omega_k a); sin(omega_k a)] of 2 k1 rows (k1 = n / 2 + 1). All threads call it.
__device__ void kernel_rows(const double* __restrict__ table, int n, double t,
                            double* __restrict__ coefs, double* __restrict__ rows) {
    const int k1 = n / 2 + 1;
    for (int k = threadIdx.x; k < k1; k += blockDim.x) {
        const double omega = 2.0 * kPi * k / n;
        const double weight = (k == 0 || 2 * k == n ? 1.0 : 2.0) / n;
        const double c = weight * cos(omega * t);
        const double s = weight * sin(omega * t);
        coefs[k] = c;
        coefs[k1 + k] = s;
        coefs[2 * k1 + k] = -omega * s;
        coefs[2 * k1 + k1 + k] = omega * c;
        coefs[4 * k1 + k] = -omega * omega * c;
        coefs[4 * k1 + k1 + k] = -omega * omega * s;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 3 * n; i += blockDim.x) {
        const int j = i / n;
        const int a = i % n;
        double acc = 0.0;
        for (int k = 0; k < 2 * k1; ++k) acc += coefs[2 * k1 * j + k] * table[(long long)k * n + a];
        rows[i] = acc;
    }
    __syncthreads();
}

// Value, gradient and Hessian of the interpolant of map m at (ty, tx) into
// out[0..5] = f, gy, gx, hyy, hxx, hxy (written by thread 0; read after the
// closing barrier). All threads call it with the same arguments.
template <typename R>
__device__ void interpolant(const R* __restrict__ m, int h, int w, double ty, double tx,
                            const double* __restrict__ table_y,
                            const double* __restrict__ table_x, double* __restrict__ coefs,
                            double* __restrict__ ky, double* __restrict__ kx,
                            double* __restrict__ cols, double* out) {
    kernel_rows(table_y, h, ty, coefs, ky);
    kernel_rows(table_x, w, tx, coefs, kx);
    for (int i = threadIdx.x; i < 3 * w; i += blockDim.x) {
        const int j = i / w;
        const int x = i % w;
        double acc = 0.0;
        for (int y = 0; y < h; ++y) acc += ky[j * h + y] * (double)m[(long long)y * w + x];
        cols[i] = acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double f = 0.0, gy = 0.0, gx = 0.0, hyy = 0.0, hxx = 0.0, hxy = 0.0;
        for (int x = 0; x < w; ++x) {
            f += cols[x] * kx[x];
            gx += cols[x] * kx[w + x];
            hxx += cols[x] * kx[2 * w + x];
            gy += cols[w + x] * kx[x];
            hxy += cols[w + x] * kx[w + x];
            hyy += cols[2 * w + x] * kx[x];
        }
        out[0] = f;
        out[1] = gy;
        out[2] = gx;
        out[3] = hyy;
        out[4] = hxx;
        out[5] = hxy;
    }
    __syncthreads();
}

}  // namespace upsample_detail

template <typename R>
__global__ void upsample(const R* __restrict__ maps, int n_maps, int h, int w,
                         const long long* __restrict__ positions, int n_pos, int factor,
                         int u, const double* __restrict__ grid_y,
                         const double* __restrict__ grid_x, const double* __restrict__ table_y,
                         const double* __restrict__ table_x, int candidates, int iterations,
                         double tolerance, double* __restrict__ scratch,
                         long long scratch_per_block, int in_shared, float* __restrict__ out) {
    using namespace upsample_detail;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    __shared__ double current[6];
    __shared__ double trial[6];
    __shared__ double state[8];  // ty, tx, ny, nx, radius, best, best dy, best dx
    __shared__ int go;
    __shared__ int found;
    __shared__ long long best_index[GPUCORR_MAX_CANDIDATES];
    __shared__ double best_value[GPUCORR_MAX_CANDIDATES];

    const int k1 = (h > w ? h : w) / 2 + 1;
    double* rows = in_shared ? reinterpret_cast<double*>(shared_bytes)
                             : scratch + blockIdx.x * scratch_per_block;
    double* grid = rows + (long long)u * w;
    double* coefs = grid + (long long)u * u;
    double* ky = coefs + 6 * k1;
    double* kx = ky + 3 * h;
    double* cols = kx + 3 * w;
    unsigned char* peak = reinterpret_cast<unsigned char*>(cols + 3 * w);  // u * u flags
    const int half = u / 2;
    const double lo = -(double)half / factor;
    const double hi = (double)(u - 1 - half) / factor;
    const long long n_jobs = (long long)n_maps * n_pos;

    for (long long job = blockIdx.x; job < n_jobs; job += gridDim.x) {
        const long long b = job / n_pos;
        const R* m = maps + b * h * w;
        long long py = positions[2 * job] % h;
        long long px = positions[2 * job + 1] % w;
        if (py < 0) py += h;
        if (px < 0) px += w;

        // 1. the grid
        for (long long i = threadIdx.x; i < (long long)u * w; i += blockDim.x) {
            const int a = (int)(i / w);
            const int x = (int)(i % w);
            double acc = 0.0;
            for (int y = 0; y < h; ++y) {
                const long long yy = ((y - py) % h + h) % h;
                acc += grid_y[(long long)a * h + yy] * (double)m[(long long)y * w + x];
            }
            rows[i] = acc;
        }
        __syncthreads();
        for (long long i = threadIdx.x; i < (long long)u * u; i += blockDim.x) {
            const int a = (int)(i / u);
            const int c = (int)(i % u);
            double acc = 0.0;
            for (int x = 0; x < w; ++x) {
                const long long xx = ((x - px) % w + w) % w;
                acc += rows[(long long)a * w + x] * grid_x[(long long)c * w + xx];
            }
            grid[i] = acc;
        }
        __syncthreads();

        // 2. the candidates: the local maxima flagged in parallel, ranked by thread 0
        for (long long i = threadIdx.x; i < (long long)u * u; i += blockDim.x) {
            const int a = (int)(i / u);
            const int c = (int)(i % u);
            const double v = grid[i];
            bool is_peak = v == v;  // not NaN
            for (int da = -1; da <= 1 && is_peak; ++da) {
                for (int dc = -1; dc <= 1; ++dc) {
                    const int aa = a + da;
                    const int cc = c + dc;
                    if ((da != 0 || dc != 0) && aa >= 0 && aa < u && cc >= 0 && cc < u &&
                        !(v >= grid[(long long)aa * u + cc]))
                        is_peak = false;
                }
            }
            peak[i] = is_peak ? 1 : 0;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            // in C order, each after every candidate at least as large: ties in C order
            int n_found = 0;
            for (long long i = 0; i < (long long)u * u; ++i) {
                if (!peak[i]) continue;
                const double v = grid[i];
                int j = n_found < candidates ? n_found : candidates;
                while (j > 0 && v > best_value[j - 1]) --j;
                if (j >= candidates) continue;
                const int last = n_found < candidates ? n_found : candidates - 1;
                for (int k = last; k > j; --k) {
                    best_index[k] = best_index[k - 1];
                    best_value[k] = best_value[k - 1];
                }
                best_index[j] = i;
                best_value[j] = v;
                if (n_found < candidates) ++n_found;
            }
            found = n_found;
            state[5] = -__longlong_as_double(0x7ff0000000000000LL);  // -inf
            state[6] = 0.0;
            state[7] = 0.0;
        }
        __syncthreads();

        // 3. Newton's method from each candidate
        const int n_found = found;
        for (int j = 0; j < n_found; ++j) {
            if (threadIdx.x == 0) {
                const long long a = best_index[j] / u;
                const long long c = best_index[j] % u;
                state[0] = py + (double)(a - half) / factor;
                state[1] = px + (double)(c - half) / factor;
                state[4] = 1.0 / factor;
            }
            __syncthreads();
            interpolant(m, h, w, state[0], state[1], table_y, table_x, coefs, ky, kx, cols,
                        current);
            for (int it = 0; it < iterations; ++it) {
                if (threadIdx.x == 0) {
                    const double gy = current[1], gx = current[2];
                    const double hyy = current[3], hxx = current[4], hxy = current[5];
                    const double radius = state[4];
                    const double ty = state[0], tx = state[1];
                    // an axis on the region's edge with the gradient pointing out stays
                    const bool held_y = (ty <= py + lo && gy < 0.0) || (ty >= py + hi && gy > 0.0);
                    const bool held_x = (tx <= px + lo && gx < 0.0) || (tx >= px + hi && gx > 0.0);
                    const double det = hyy * hxx - hxy * hxy;
                    double sy = 0.0, sx = 0.0;
                    go = 1;
                    if (held_y && held_x) {
                        go = 0;
                    } else if (held_y) {
                        sy = 0.0;
                        sx = hxx < 0.0 ? -gx / hxx : copysign(radius, gx);
                    } else if (held_x) {
                        sx = 0.0;
                        sy = hyy < 0.0 ? -gy / hyy : copysign(radius, gy);
                    } else if (hyy < 0.0 && hxx < 0.0 && det > 0.0) {
                        sy = -(hxx * gy - hxy * gx) / det;
                        sx = -(hyy * gx - hxy * gy) / det;
                    } else {
                        const double g = sqrt(gy * gy + gx * gx);
                        if (!(g > 0.0)) go = 0;
                        sy = radius * gy / g;
                        sx = radius * gx / g;
                    }
                    if (go) {
                        const double longest = fabs(sy) > fabs(sx) ? fabs(sy) : fabs(sx);
                        if (longest > radius) {
                            sy *= radius / longest;
                            sx *= radius / longest;
                        }
                        double ny = ty + sy, nx = tx + sx;
                        ny = ny < py + lo ? py + lo : (ny > py + hi ? py + hi : ny);
                        nx = nx < px + lo ? px + lo : (nx > px + hi ? px + hi : nx);
                        const double moved = fabs(ny - ty) > fabs(nx - tx) ? fabs(ny - ty)
                                                                            : fabs(nx - tx);
                        state[2] = ny;
                        state[3] = nx;
                        // moved, and whether the step had been shortened, for the decision
                        trial[0] = moved;
                        trial[1] = longest > radius ? 1.0 : 0.0;
                        if (!(moved > tolerance)) go = 0;
                    }
                }
                __syncthreads();
                const bool step = go != 0;
                const double moved = trial[0];
                const bool shortened = trial[1] != 0.0;
                __syncthreads();  // go and trial[] are written again below
                if (!step) break;
                interpolant(m, h, w, state[2], state[3], table_y, table_x, coefs, ky, kx,
                            cols, trial);
                if (threadIdx.x == 0) {
                    if (trial[0] > current[0]) {
                        state[0] = state[2];
                        state[1] = state[3];
                        for (int i = 0; i < 6; ++i) current[i] = trial[i];
                        if (shortened) state[4] *= 2.0;
                    } else {
                        state[4] = 0.25 * moved;
                        if (!(state[4] > tolerance)) go = 0;
                    }
                }
                __syncthreads();
                const bool more = go != 0;
                __syncthreads();  // go is written again at the next step
                if (!more) break;
            }
            if (threadIdx.x == 0 && current[0] > state[5]) {
                state[5] = current[0];
                state[6] = state[0] - py;
                state[7] = state[1] - px;
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            out[2 * job] = (float)((double)positions[2 * job] + state[6]);
            out[2 * job + 1] = (float)((double)positions[2 * job + 1] + state[7]);
        }
        __syncthreads();
    }
}

// Instantiations for nvcc (CI compiles this file without NVRTC's name expressions);
// NVRTC (__CUDACC_RTC__) compiles only the name expressions it is given.
#ifndef __CUDACC_RTC__
template __global__ void upsample<float>(const float*, int, int, int, const long long*, int,
                                         int, int, const double*, const double*,
                                         const double*, const double*, int, int, double,
                                         double*, long long, int, float*);
template __global__ void upsample<double>(const double*, int, int, int, const long long*, int,
                                          int, int, const double*, const double*,
                                          const double*, const double*, int, int, double,
                                          double*, long long, int, float*);
#endif  // __CUDACC_RTC__
