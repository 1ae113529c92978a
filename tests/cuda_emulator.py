"""Run the real CUDA kernel sources of ``kernels/*.cu`` on the CPU, for tests.

The text of a kernel source is rewritten *in memory* (the files are never
touched) so that ``g++ -std=c++20`` compiles it as host C++: CUDA qualifiers
are dropped, ``extern __shared__`` becomes the block's dynamic shared buffer,
``__shared__`` locals become storage shared by the block's threads,
``threadIdx`` is thread-local, ``__syncthreads()`` is a ``std::barrier`` of the
block's threads, and the CUDA built-ins the sources use are defined on the
host. An ``extern "C"`` wrapper per name expression takes a ``void** params``
array like ``cuLaunchKernel``'s ``kernelParams``. The shared library is
compiled once per generated text (cached by hash in the temp directory) and
loaded with ctypes.

A launch runs in a forked child process, so that a kernel that crashes or
hangs cannot take the test process with it. Blocks run one after another;
each block runs ``blockDim.x`` real ``std::thread`` s, so barrier semantics and
races behave as in a GPU block (keep grids small). Checks that make a GPU bug
fail loudly here:

* every array argument must be C-contiguous with the dtype of the kernel's
  pointer parameter, every scalar a NumPy scalar of exactly the parameter's
  type (``TypeError`` otherwise: that is how launcher bugs show up);
* each array is copied into its own mapping that ends at an inaccessible
  page (and starts after one), with canary bytes before it: an access past
  its end or far before its start faults, a write just before it is caught by
  the canaries, and the error names the kernel parameter;
* the dynamic shared memory is exactly ``shared_mem`` bytes, ending at an
  inaccessible page, and is filled with 0xFF bytes (NaN, -1) before each
  block, as are ``__shared__`` locals, so reads of unwritten shared memory
  show up in the results;
* every ``__syncthreads()`` phase checks that all the block's live threads
  reached the same ``__syncthreads()`` (divergent barriers are reported);
* a launch that does not finish within ``timeout`` seconds is killed and
  reported (a deadlock);
* grids are launched as CuPy launches them: ``max(1, grid)`` blocks (an empty
  grid runs one block, which must find no work), at most 2**31 - 1.

Not emulated: warp-level behaviour, FMA contraction (the host build uses
``-ffp-contract=off``), the device's math library accuracy (host ``logf``
etc. are used), and true concurrency between blocks.

The kernel emulator only: the stand-in for CuPy that launches through it, and
under which the launchers of :mod:`gpucorr.backends._cuda` run unchanged, is
``tests/fake_cupy.py`` (there is one stand-in).
"""
import contextlib
import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import numpy as np

__all__ = ["unavailable_reason", "launch", "launch_source", "check_launch", "kernel_signature",
           "EmulatorError", "LaunchRecord"]

#: C type (as written in kernel signatures and name expressions) -> NumPy dtype
C_DTYPES = {
    "bool": np.dtype(np.bool_),
    "char": np.dtype(np.int8),
    "signed char": np.dtype(np.int8),
    "unsigned char": np.dtype(np.uint8),
    "short": np.dtype(np.int16),
    "unsigned short": np.dtype(np.uint16),
    "int": np.dtype(np.int32),
    "unsigned": np.dtype(np.uint32),
    "unsigned int": np.dtype(np.uint32),
    "long long": np.dtype(np.int64),
    "unsigned long long": np.dtype(np.uint64),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
}

_CXX_FLAGS = ("-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-ffp-contract=off",
              "-fno-fast-math", "-Werror=return-type")

# exit codes of the child (mirrored in the runtime below)
_OK, _KERNEL_ERROR, _FAULT, _TIMEOUT, _CRASH, _FORK_FAILED = 0, 1, 2, 3, 4, 5


class EmulatorError(RuntimeError):
    """A kernel misbehaved under emulation (fault, canary, divergent barrier, hang)."""


# --------------------------------------------------------------------------------------
# C++ text
# --------------------------------------------------------------------------------------

_PRELUDE = r"""
// ---- gpucorr CUDA emulator prelude ----
// as under NVRTC: only the name expressions are instantiated, not the sources' explicit
// instantiations for nvcc
#define __CUDACC_RTC__ 1
#include <barrier>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

using std::isfinite; using std::isnan; using std::isinf; using std::signbit;
using std::sqrt; using std::log; using std::exp; using std::fabs; using std::floor;
using std::ceil; using std::round; using std::pow; using std::fmin; using std::fmax;

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x = 1, y = 1, z = 1; };
thread_local uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;
constexpr int warpSize = 32;

// CUDA device min/max overloads (floating ones ignore NaN like fminf/fmaxf)
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int min(int a, unsigned int b) { return min((unsigned int)a, b); }
inline unsigned int min(unsigned int a, int b) { return min(a, (unsigned int)b); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double min(double a, float b) { return fmin(a, (double)b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline unsigned int max(int a, unsigned int b) { return max((unsigned int)a, b); }
inline unsigned int max(unsigned int a, int b) { return max(a, (unsigned int)b); }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double max(double a, float b) { return fmax(a, (double)b); }

template <class To, class From> inline To emu_bits(From v) {
    static_assert(sizeof(To) == sizeof(From));
    To out; std::memcpy(&out, &v, sizeof(To)); return out;
}
inline float __int_as_float(int v) { return emu_bits<float>(v); }
inline int __float_as_int(float v) { return emu_bits<int>(v); }
inline float __uint_as_float(unsigned int v) { return emu_bits<float>(v); }
inline unsigned int __float_as_uint(float v) { return emu_bits<unsigned int>(v); }
inline double __longlong_as_double(long long v) { return emu_bits<double>(v); }
inline long long __double_as_longlong(double v) { return emu_bits<long long>(v); }
inline float rsqrtf(float v) { return 1.0f / sqrtf(v); }
inline double rsqrt(double v) { return 1.0 / sqrt(v); }
template <class T> inline T __ldg(const T* p) { return *p; }

namespace emu {

constexpr int kExited = -1;
constexpr int kError = 1, kFault = 2, kTimeout = 3, kCrash = 4, kForkFailed = 5;

struct Report {                 // lives in memory shared with the parent
    uintptr_t fault_addr;
    int fault_signal;
    int status;
    uintptr_t shared_begin, shared_end;
    char error[4096];
};

Report* report = nullptr;
std::mutex error_mutex;

inline void fail(const char* fmt, ...) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (report->error[0]) return;     // keep the first error
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(report->error, sizeof(report->error), fmt, ap);
    va_end(ap);
}

inline size_t page_size() { return (size_t)sysconf(_SC_PAGESIZE); }

// nbytes of data ending at an inaccessible page, after an inaccessible page;
// the slack before the data is filled with canary bytes 0xA5.
inline unsigned char* guarded_alloc(size_t nbytes, bool shared, void** base_out,
                                    size_t* total_out) {
    const size_t page = page_size();
    const size_t data_pages = (nbytes + page - 1) / page;
    const size_t total = (data_pages + 2) * page;
    void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                      (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return nullptr;
    unsigned char* b = static_cast<unsigned char*>(base);
    mprotect(b, page, PROT_NONE);
    mprotect(b + (data_pages + 1) * page, page, PROT_NONE);
    unsigned char* data = b + (data_pages + 1) * page - nbytes;
    std::memset(b + page, 0xA5, (size_t)(data - (b + page)));
    *base_out = base;
    *total_out = total;
    return data;
}

struct StaticShared { void* base; size_t total; unsigned char* data; size_t nbytes; };

struct Sync {
    void operator()() noexcept;
};

struct BlockState {
    unsigned char* dyn_shared = nullptr;
    std::barrier<Sync>* sync = nullptr;
    std::mutex static_mutex;
    std::map<long, StaticShared> statics;
    std::vector<int> site;      // __syncthreads line each thread waits at
};

BlockState block;
unsigned char* dyn_shared = nullptr;   // what extern __shared__ arrays point to

void Sync::operator()() noexcept {
    int first = kExited;
    unsigned first_thread = 0;
    for (unsigned t = 0; t < block.site.size(); ++t) {
        const int s = block.site[t];
        if (s == kExited) continue;
        if (first == kExited) {
            first = s;
            first_thread = t;
        } else if (s != first) {
            fail("divergent __syncthreads in block %u: thread %u waits at line %d, "
                 "thread %u at line %d", blockIdx.x, first_thread, first, t, s);
            return;
        }
    }
}

inline void syncthreads(int line) {
    block.site[threadIdx.x] = line;
    block.sync->arrive_and_wait();
}

template <class T> inline T* static_shared(long key) {
    std::lock_guard<std::mutex> lock(block.static_mutex);
    auto it = block.statics.find(key);
    if (it == block.statics.end()) {
        StaticShared s;
        s.nbytes = (sizeof(T) + 15) / 16 * 16;
        s.data = guarded_alloc(s.nbytes, false, &s.base, &s.total);
        if (!s.data) { fail("cannot allocate __shared__ storage"); std::abort(); }
        std::memset(s.data, 0xFF, s.nbytes);
        it = block.statics.emplace(key, s).first;
    }
    return reinterpret_cast<T*>(it->second.data);
}

}  // namespace emu
// ---- end of prelude ----
"""

_RUNTIME = r"""
// ---- gpucorr CUDA emulator runtime ----
namespace emu {

using Kernel = void (*)(void**);

void on_fault(int sig, siginfo_t* info, void*) {
    report->fault_addr = (uintptr_t)info->si_addr;
    report->fault_signal = sig;
    _exit(kFault);
}

int run_grid(Kernel kernel, unsigned grid, unsigned nthreads, size_t shared_mem, void** params) {
    void* dyn_base;
    size_t dyn_total;
    dyn_shared = guarded_alloc(shared_mem, false, &dyn_base, &dyn_total);
    if (!dyn_shared) {
        fail("cannot allocate %zu bytes of shared memory", shared_mem);
        return kError;
    }
    report->shared_begin = (uintptr_t)dyn_shared;
    report->shared_end = (uintptr_t)dyn_shared + shared_mem;
    block.dyn_shared = dyn_shared;
    block.site.assign(nthreads, kExited);
    blockDim.x = nthreads;
    gridDim.x = grid;
    std::barrier<> control((std::ptrdiff_t)nthreads);
    auto body = [&](unsigned tid) {
        threadIdx = uint3{tid, 0, 0};
        for (unsigned b = 0; b < grid; ++b) {
            if (tid == 0) {
                blockIdx = uint3{b, 0, 0};
                std::memset(dyn_shared, 0xFF, shared_mem);
                block.sync = new std::barrier<Sync>((std::ptrdiff_t)nthreads, Sync{});
                std::fill(block.site.begin(), block.site.end(), 0);
            }
            control.arrive_and_wait();
            kernel(params);
            block.site[tid] = kExited;
            block.sync->arrive_and_drop();
            control.arrive_and_wait();
            if (tid == 0) {
                delete block.sync;
                block.sync = nullptr;
                for (auto& kv : block.statics) munmap(kv.second.base, kv.second.total);
                block.statics.clear();
            }
        }
    };
    std::vector<std::thread> threads;
    threads.reserve(nthreads);
    for (unsigned t = 0; t < nthreads; ++t) threads.emplace_back(body, t);
    for (auto& t : threads) t.join();
    return report->error[0] ? kError : 0;
}

}  // namespace emu

extern "C" {

int emu_kernel_count() { return (int)(sizeof(emu_kernels) / sizeof(emu_kernels[0])); }

void* emu_guarded_alloc(size_t nbytes, void** base_out, size_t* total_out) {
    return emu::guarded_alloc(nbytes, true, base_out, total_out);
}

void emu_guarded_free(void* base, size_t total) { munmap(base, total); }

// Bytes of the canary slack in front of data that no longer hold 0xA5.
size_t emu_canary_damage(void* base, void* data) {
    const unsigned char* p = static_cast<unsigned char*>(base) + emu::page_size();
    size_t damaged = 0;
    for (; p < static_cast<unsigned char*>(data); ++p) damaged += (*p != 0xA5);
    return damaged;
}

// Runs kernel `index` in a forked child; returns the child's status code.
int emu_launch(int index, unsigned grid, unsigned block, size_t shared_mem, void** params,
               emu::Report* report, double timeout_s) {
    std::memset(report, 0, sizeof(*report));
    emu::report = report;
    pid_t pid = fork();
    if (pid < 0) return emu::kForkFailed;
    if (pid == 0) {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = emu::on_fault;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, nullptr);
        sigaction(SIGBUS, &sa, nullptr);
        _exit(emu::run_grid(emu_kernels[index], grid, block, shared_mem, params));
    }
    timespec start, now, nap{0, 200000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int wstatus = 0;
        pid_t r = waitpid(pid, &wstatus, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
            report->fault_signal = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
            return emu::kCrash;
        }
        if (r < 0) return emu::kCrash;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) + 1e-9 * (now.tv_nsec - start.tv_nsec) > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &wstatus, 0);
            return emu::kTimeout;
        }
        nanosleep(&nap, nullptr);
    }
}

}  // extern "C"
"""


# --------------------------------------------------------------------------------------
# parsing kernel sources and name expressions
# --------------------------------------------------------------------------------------

def _split_top(text, sep=","):
    """Split at ``sep`` outside <>, (), []."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _normalise_type(text):
    return " ".join(text.replace("*", " * ").split()).replace(" *", "*")


class Param:
    """One kernel parameter, template arguments substituted."""

    def __init__(self, ctype, name):
        self.ctype = ctype          # C type as the wrapper casts to, e.g. "const float*"
        self.name = name
        self.pointer = ctype.endswith("*")
        base = ctype.rstrip("*").strip()
        self.const = base.startswith("const ") or base.endswith(" const")
        base = re.sub(r"\bconst\b", "", base)
        self.base = " ".join(base.split())
        if self.base not in C_DTYPES or ctype.count("*") > 1:
            raise TypeError(f"kernel parameter {name!r} has type {ctype!r}, which the emulator "
                            f"does not marshal; known types: {sorted(C_DTYPES)} and pointers "
                            f"to them")
        self.dtype = C_DTYPES[self.base]

    def __repr__(self):
        return f"{self.ctype} {self.name}"


def _parse_expression(expression):
    m = re.fullmatch(r"\s*(\w+)\s*(?:<(.*)>)?\s*", expression)
    if not m:
        raise ValueError(f"cannot parse name expression {expression!r}")
    return m.group(1), _split_top(m.group(2) or "")


def kernel_signature(source, expression):
    """Parameters (list of :class:`Param`) of the kernel ``expression`` in ``source``."""
    name, targs = _parse_expression(expression)
    pattern = re.compile(r"(?:template\s*<([^<>]*)>\s*)?__global__\s+void\s+" + re.escape(name)
                         + r"\s*\(([^)]*)\)\s*\{")
    m = pattern.search(source)
    if not m:
        raise ValueError(f"no __global__ definition of {name!r} in the source")
    tparams = [p.split()[-1] for p in _split_top(m.group(1) or "")]
    if len(tparams) != len(targs):
        raise ValueError(f"{expression!r} gives {len(targs)} template arguments; {name} takes "
                         f"{len(tparams)} ({', '.join(tparams)})")
    subst = dict(zip(tparams, targs))
    params = []
    for decl in _split_top(m.group(2)):
        decl = re.sub(r"\b__restrict__\b|\b__restrict\b", " ", decl)
        pm = re.fullmatch(r"(.*?)(\w+)\s*", decl, flags=re.S)
        ctype = pm.group(1)
        if subst:
            ctype = re.sub(r"\b(" + "|".join(map(re.escape, subst)) + r")\b",
                           lambda t: subst[t.group(1)], ctype)
        params.append(Param(_normalise_type(ctype), pm.group(2)))
    return params


# --------------------------------------------------------------------------------------
# source rewriting and compilation
# --------------------------------------------------------------------------------------

def _keep_lines(replacement):
    """A re.sub callback giving ``replacement(match)`` plus the match's newlines."""
    def sub(m):
        return replacement(m) + "\n" * m.group(0).count("\n")
    return sub


def host_source(source):
    """``source`` rewritten as host C++ (the CUDA part only, no prelude)."""
    text = source
    text = re.sub(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?"
                  r"(?:alignas\s*\(\s*\d+\s*\)\s*)?([\w ]+?)\s+(\w+)\s*\[\s*\]\s*;",
                  _keep_lines(lambda m: f"{m.group(1)}* {m.group(2)} = "
                                        f"reinterpret_cast<{m.group(1)}*>(::emu::dyn_shared);"),
                  text)
    counter = iter(range(1, 1 << 30))
    text = re.sub(r"__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([\w :<>]+?)\s+(\w+)\s*"
                  r"((?:\[[^\]]*\]\s*)*);",
                  _keep_lines(lambda m: f"auto& {m.group(2)} = *::emu::static_shared<"
                                        f"{m.group(1)}{''.join(m.group(3).split())}>"
                                        f"({next(counter)});"),
                  text)
    text = re.sub(r"\b__syncthreads\s*\(\s*\)", "::emu::syncthreads(__LINE__)", text)
    text = re.sub(r"\b__launch_bounds__\s*\([^)]*\)", "", text)
    text = re.sub(r"\b__align__\s*\(", "alignas(", text)
    text = re.sub(r"\b(__global__|__device__|__host__)\b", "", text)
    text = re.sub(r"\b__forceinline__\b", "inline", text)
    text = re.sub(r"\b__noinline__\b", "__attribute__((noinline))", text)
    if "__shared__" in text:
        raise ValueError("the emulator could not rewrite every __shared__ declaration")
    return text


def _wrappers(source, expressions):
    lines = []
    for i, expression in enumerate(expressions):
        params = kernel_signature(source, expression)
        lines.append(f'extern "C" void emu_wrapper_{i}(void** p) {{')
        for k, prm in enumerate(params):
            lines.append(f"    using A{k} = {prm.ctype};")
        call_args = ", ".join(f"*static_cast<A{k}*>(p[{k}])" for k in range(len(params)))
        lines.append(f"    {expression}({call_args});")
        lines.append("}")
    table = ", ".join(f"emu_wrapper_{i}" for i in range(len(expressions)))
    lines.append(f"void (*emu_kernels[])(void**) = {{{table}}};")
    return "\n".join(lines)


def generate(source, expressions, label="kernel.cu"):
    """The whole C++ translation unit for ``source`` and its name ``expressions``."""
    return "".join([
        _PRELUDE,
        f'#line 1 "{label}"\n',
        host_source(source),
        '\n#line 1 "emulator-wrappers"\n',
        _wrappers(source, expressions),
        "\n",
        _RUNTIME,
    ])


def _compiler():
    return shutil.which("g++")


_lock = threading.Lock()


class _Library:
    def __init__(self, path, expressions):
        self.lib = ctypes.CDLL(path)
        self.expressions = list(expressions)
        lib = self.lib
        lib.emu_kernel_count.restype = ctypes.c_int
        lib.emu_guarded_alloc.restype = ctypes.c_void_p
        lib.emu_guarded_alloc.argtypes = [ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p),
                                          ctypes.POINTER(ctypes.c_size_t)]
        lib.emu_guarded_free.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.emu_canary_damage.restype = ctypes.c_size_t
        lib.emu_canary_damage.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.emu_launch.restype = ctypes.c_int
        lib.emu_launch.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_size_t,
                                   ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                   ctypes.c_double]
        assert lib.emu_kernel_count() == len(self.expressions)


class _Report(ctypes.Structure):
    _fields_ = [("fault_addr", ctypes.c_size_t), ("fault_signal", ctypes.c_int),
                ("status", ctypes.c_int), ("shared_begin", ctypes.c_size_t),
                ("shared_end", ctypes.c_size_t), ("error", ctypes.c_char * 4096)]


def _cache_dir():
    path = os.path.join(tempfile.gettempdir(), f"gpucorr-cuda-emulator-{os.getuid()}")
    os.makedirs(path, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def _build(source, expressions, label):
    """Compile (or reuse) the library for ``source``; a :class:`_Library` or an error text."""
    cxx = _compiler()
    if cxx is None:
        return "no C++ compiler: g++ is not on PATH"
    try:
        text = generate(source, expressions, label)
    except (ValueError, TypeError) as exc:
        return f"cannot translate {label}: {exc}"
    key = hashlib.sha256("\0".join((text, cxx) + _CXX_FLAGS).encode()).hexdigest()[:24]
    so = os.path.join(_cache_dir(), f"{key}.so")
    if not os.path.exists(so):
        cpp = os.path.join(_cache_dir(), f"{key}.cpp")
        with open(cpp, "w") as f:
            f.write(text)
        tmp = f"{so}.{os.getpid()}.{threading.get_ident()}.tmp"
        proc = subprocess.run([cxx, *_CXX_FLAGS, "-o", tmp, cpp], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            return f"g++ failed on {label} (rewritten as {cpp}):\n{proc.stderr[-6000:]}"
        os.replace(tmp, so)
    return _Library(so, expressions)


def _launcher_expressions(name):
    from gpucorr.backends import _cuda
    return _cuda.kernel_expressions()[name]


def _library(source, expressions, label):
    with _lock:
        result = _build(source, tuple(expressions), label)
    if isinstance(result, str):
        raise EmulatorError(result)
    return result


@functools.lru_cache(maxsize=1)
def unavailable_reason():
    """None if the emulator can compile every kernel source, else why not."""
    if sys.platform not in ("linux", "darwin"):
        return f"the CUDA emulator needs fork and mprotect (Linux); this is {sys.platform}"
    if _compiler() is None:
        return "no C++ compiler: g++ is not on PATH"
    from gpucorr.backends import _cuda
    jobs = [(_cuda.kernel_source(n), tuple(_launcher_expressions(n)), n)
            for n in _cuda.kernel_expressions()]
    # compile in parallel (g++ runs in subprocesses)
    results = [None] * len(jobs)

    def work(i):
        results[i] = _build(*jobs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, str)]
    return "\n".join(errors) if errors else None


# --------------------------------------------------------------------------------------
# launching
# --------------------------------------------------------------------------------------

class LaunchRecord:
    """What one emulated launch was given (kept in :data:`launches` for tests)."""

    def __init__(self, label, expression, grid, block, args, shared_mem):
        self.label, self.expression = label, expression
        self.grid, self.block, self.shared_mem = grid, block, shared_mem
        self.args = args

    def __repr__(self):
        return (f"LaunchRecord({self.label}: {self.expression}, grid={self.grid}, "
                f"block={self.block}, shared_mem={self.shared_mem})")


#: every launch made through this module, in order (tests may clear it)
launches = []


def _dim1(value, what):
    if isinstance(value, (int, np.integer)):
        value = (value,)
    value = tuple(int(v) for v in value)
    if len(value) != 1 and any(v != 1 for v in value[1:]):
        raise ValueError(f"the emulator runs 1-D {what}s only; got {value}")
    if value[0] < 1 and what == "block":
        raise ValueError(f"block must be >= 1 thread; got {value}")
    if what == "block" and value[0] > 1024:
        raise ValueError(f"a block has at most 1024 threads; got {value}")
    if what == "grid" and value[0] > 2**31 - 1:
        raise ValueError(f"a grid has at most 2**31 - 1 blocks along x; got {value}")
    # CuPy launches max(1, grid) blocks (cupy/cuda/function.pyx): an empty grid still
    # runs one block, which must find no work
    return max(1, value[0])


def launch(name, expression, grid, block, args, shared_mem=0, timeout=120.0):
    """Run kernel ``expression`` of ``kernels/<name>`` on the CPU.

    ``args`` are C-contiguous NumPy arrays (passed as pointers) and NumPy scalars
    (passed by value); both are checked against the kernel's parameters.
    Arrays the kernel may write (non-const pointers) are updated in place.
    """
    from gpucorr.backends import _cuda
    return launch_source(_cuda.kernel_source(name), expression, grid, block, args, shared_mem,
                         expressions=_launcher_expressions(name), label=name, timeout=timeout)


def _check_args(label, expression, params, args):
    if not isinstance(args, tuple):
        raise TypeError(f"kernel arguments must be a tuple; got {type(args).__name__}")
    if len(args) != len(params):
        raise TypeError(f"{expression} takes {len(params)} arguments "
                        f"({', '.join(map(repr, params))}); got {len(args)}")
    for k, (prm, arg) in enumerate(zip(params, args)):
        where = f"{label} {expression}: argument {k} ({prm!r})"
        if prm.pointer:
            if not isinstance(arg, np.ndarray):
                raise TypeError(f"{where} must be an array; got {type(arg).__name__}")
            if arg.dtype != prm.dtype:
                raise TypeError(f"{where} must be a {prm.dtype} array; got {arg.dtype}")
            if not arg.flags.c_contiguous:
                raise TypeError(f"{where} must be C-contiguous (kernels ignore strides); got "
                                f"strides {arg.strides} for shape {arg.shape}")
            if not prm.const and not arg.flags.writeable:
                raise TypeError(f"{where} is written by the kernel; got a read-only array")
        else:
            if isinstance(arg, np.ndarray) or not isinstance(arg, np.generic):
                raise TypeError(f"{where} must be a NumPy scalar of type {prm.dtype} (a Python "
                                f"{type(arg).__name__} has no C type); got {arg!r}")
            if arg.dtype != prm.dtype:
                raise TypeError(f"{where} must be a {prm.dtype} scalar; got {arg.dtype} "
                                f"({arg!r})")


def check_launch(source, expression, grid, block, args, shared_mem=0, label="kernel.cu"):
    """What a launch is checked for before it runs (the launch configuration, and each
    argument against the kernel's parameters): ``(grid, block, shared_mem, params)``.

    The CuPy stand-in (tests/fake_cupy.py) calls it when a kernel is queued, so that a
    launcher's mistake raises where the launch is, as CuPy's would, though the kernel
    itself runs later (when its stream is run)."""
    grid = _dim1(grid, "grid")
    block = _dim1(block, "block")
    shared_mem = int(shared_mem)
    if shared_mem < 0:
        raise ValueError(f"shared_mem must be >= 0; got {shared_mem}")
    params = kernel_signature(source, expression)
    _check_args(label, expression, params, args)
    return grid, block, shared_mem, params


def launch_source(source, expression, grid, block, args, shared_mem=0, expressions=None,
                  label="kernel.cu", timeout=120.0):
    """:func:`launch` for the text of a kernel source."""
    expressions = list(expressions or [])
    if expression not in expressions:
        expressions.append(expression)
    grid, block, shared_mem, params = check_launch(source, expression, grid, block, args,
                                                   shared_mem, label)
    launches.append(LaunchRecord(label, expression, grid, block, args, shared_mem))
    if grid == 0:
        return
    lib = _library(source, expressions, label)
    index = lib.expressions.index(expression)
    c = lib.lib
    regions = []        # (param, arg, base, total, data)
    holders = []        # keep ctypes objects alive
    param_ptrs = (ctypes.c_void_p * max(1, len(args)))()
    try:
        for k, (prm, arg) in enumerate(zip(params, args)):
            if prm.pointer:
                base, total = ctypes.c_void_p(), ctypes.c_size_t()
                data = c.emu_guarded_alloc(arg.nbytes, ctypes.byref(base), ctypes.byref(total))
                if not data:
                    raise MemoryError(f"cannot map {arg.nbytes} bytes for {prm.name}")
                regions.append((prm, arg, base.value, total.value, data))
                if arg.nbytes:
                    ctypes.memmove(data, arg.ctypes.data, arg.nbytes)
                holder = ctypes.c_void_p(data)
            else:
                holder = (ctypes.c_char * arg.dtype.itemsize).from_buffer_copy(arg.tobytes())
            holders.append(holder)
            param_ptrs[k] = ctypes.cast(ctypes.pointer(holder), ctypes.c_void_p)
        report = _Report()
        rbase, rtotal = ctypes.c_void_p(), ctypes.c_size_t()
        rdata = c.emu_guarded_alloc(ctypes.sizeof(_Report), ctypes.byref(rbase),
                                    ctypes.byref(rtotal))
        regions_report = (rbase.value, rtotal.value)
        try:
            status = c.emu_launch(index, grid, block, shared_mem, param_ptrs, rdata,
                                  float(timeout))
            ctypes.memmove(ctypes.addressof(report), rdata, ctypes.sizeof(_Report))
        finally:
            c.emu_guarded_free(*regions_report)
        what = f"{label} {expression} (grid {grid}, block {block}, shared_mem {shared_mem})"
        if status == _FAULT:
            raise EmulatorError(f"{what}: {_describe_fault(report, regions)}")
        if status == _KERNEL_ERROR:
            raise EmulatorError(f"{what}: {report.error.decode(errors='replace')}")
        if status == _TIMEOUT:
            raise EmulatorError(f"{what}: did not finish within {timeout} s (a deadlock, e.g. "
                                f"a __syncthreads() not reached by every thread?)")
        if status == _FORK_FAILED:
            raise EmulatorError(f"{what}: fork failed")
        if status != _OK:
            raise EmulatorError(f"{what}: the emulating process died (status {status}, "
                                f"signal {report.fault_signal})")
        for prm, arg, base, total, data in regions:
            damage = c.emu_canary_damage(base, data)
            if damage:
                raise EmulatorError(f"{what}: the kernel wrote {damage} byte(s) just before "
                                    f"the start of argument {prm!r}")
        for prm, arg, base, total, data in regions:
            if not prm.const and arg.nbytes:
                ctypes.memmove(arg.ctypes.data, data, arg.nbytes)
    finally:
        for prm, arg, base, total, data in regions:
            c.emu_guarded_free(base, total)


def _describe_fault(report, regions):
    addr = report.fault_addr
    sig = {11: "SIGSEGV", 7: "SIGBUS"}.get(report.fault_signal, str(report.fault_signal))
    page = os.sysconf("SC_PAGE_SIZE")
    if report.shared_end <= addr < report.shared_end + page:
        return (f"out-of-bounds access to dynamic shared memory, byte "
                f"{addr - report.shared_begin} of a {report.shared_end - report.shared_begin}-"
                f"byte buffer (is shared_mem large enough?) [{sig}]")
    for prm, arg, base, total, data in regions:
        end = data + arg.nbytes
        if end <= addr < base + total:
            return (f"out-of-bounds access to argument {prm!r}: byte {addr - data} of a "
                    f"{arg.nbytes}-byte array of shape {arg.shape} [{sig}]")
        if base <= addr < base + page:
            return (f"out-of-bounds access to argument {prm!r}: byte {addr - data} (before its "
                    f"start) [{sig}]")
    return f"invalid memory access at {addr:#x} [{sig}]"
