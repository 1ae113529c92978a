"""The real CuPy's public API, recorded, so that the CPU stand-in refuses what CuPy refuses.

``tests/fake_cupy.py`` runs gpucorr's GPU code on NumPy. Left to itself it
would accept any NumPy function and any NumPy keyword, so a call that only
NumPy has (a function CuPy lacks, ``initial=`` on a reduction, a list where
CuPy's launcher wants a tuple) would pass every test here and fail on the
first real GPU. This module holds the names and signatures of CuPy's public
functions, ufuncs, classes and ``ndarray`` methods, read from an installed
CuPy by ``python tests/cupy_api.py --write`` (CuPy imports without a GPU) and
stored in ``tests/cupy_api.json``; the stand-in checks every name it serves
and every call it takes against it.

A signature comes from :func:`inspect.signature` where CuPy's function is
Python, from the first docstring line where it is Cython (CuPy builds with
``embedsignature``), and is written out below where neither exists
(``_KNOWN``). Where no signature is known the name is still checked, the
call is not.
"""
import builtins
import functools
import inspect
import json
import os
import re
import sys

__all__ = ["MANIFEST", "load", "check_name", "check_call", "check_ufunc", "signature_of",
           "has", "spec"]

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy_api.json")

#: the namespaces and classes recorded (what gpucorr and its stand-in can reach)
NAMESPACES = ("cupy", "cupy.fft", "cupy.linalg", "cupy.testing", "cupy.cuda", "cupy.cuda.runtime",
              "cupy.cuda.memory", "cupy.cuda.nvtx", "cupyx", "cupyx.scipy", "cupyx.scipy.fft")
CLASSES = ("cupy.ndarray", "cupy.cuda.Stream", "cupy.cuda.ExternalStream", "cupy.cuda.Event",
           "cupy.cuda.Device", "cupy.RawModule", "cupy.RawKernel", "cupy.cuda.MemoryPointer",
           "cupy.cuda.MemoryPool", "cupy.cuda.PinnedMemoryPool")

#: signatures that neither inspect nor the docstring gives.
#: ``RawKernel.__call__(grid, block, args, **kwargs)`` hands on to
#: ``cupy.cuda.function.Function.__call__(self, tuple grid, tuple block, args,
#: size_t shared_mem=0, stream=None, enable_cooperative_groups=False)`` (CuPy's
#: cupy/cuda/function.pyx), whose ``tuple`` parameters refuse lists and ints.
_KNOWN = {
    "cupy.RawKernel.__call__": {
        "params": [["grid", "POSITIONAL_OR_KEYWORD", False],
                   ["block", "POSITIONAL_OR_KEYWORD", False],
                   ["args", "POSITIONAL_OR_KEYWORD", False],
                   ["shared_mem", "POSITIONAL_OR_KEYWORD", True],
                   ["stream", "POSITIONAL_OR_KEYWORD", True],
                   ["enable_cooperative_groups", "POSITIONAL_OR_KEYWORD", True]],
        "types": {"grid": "tuple", "block": "tuple"}},
}

# Cython's typed parameters that refuse other Python types ("str code=None")
_STRICT_TYPES = {"tuple", "list", "dict", "str", "bytes"}


# ------------------------------------------------------------------ reading CuPy (--write)

def _split_top(text):
    """Split a parameter list at the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_doc_signature(doc):
    """Parameters from a Cython docstring's first line, ``name(a, b=1, *, c=None) -> T``."""
    if not doc:
        return None
    line = doc.strip().splitlines()[0].replace("\\*", "*")
    m = re.match(r"^[\w.]+\((.*)\)\s*(->.*)?$", line)
    if not m:
        return None
    params, types, kind = [], {}, "POSITIONAL_OR_KEYWORD"
    tokens = _split_top(m.group(1))
    if "/" in tokens:
        kind = "POSITIONAL_ONLY"
    for token in tokens:
        if token == "/":
            kind = "POSITIONAL_OR_KEYWORD"
            continue
        if token == "*":
            kind = "KEYWORD_ONLY"
            continue
        if token.startswith("**"):
            params.append([token[2:].split()[-1], "VAR_KEYWORD", False])
            continue
        if token.startswith("*"):
            params.append([token[1:].split()[-1], "VAR_POSITIONAL", False])
            kind = "KEYWORD_ONLY"
            continue
        head, _, _ = token.partition("=")
        words = head.split()
        if not words or not re.fullmatch(r"\w+", words[-1]):
            return None
        name = words[-1]
        if len(words) > 1 and words[-2] in _STRICT_TYPES:
            types[name] = words[-2]
        params.append([name, kind, "=" in token])
    if params and params[0][0] == "self":
        params = params[1:]
    return {"params": params, "types": types}


def _read_signature(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return _parse_doc_signature(getattr(obj, "__doc__", None))
    params = [[p.name, p.kind.name, p.default is not inspect.Parameter.empty]
              for p in sig.parameters.values()]
    if params and params[0][0] == "self":
        params = params[1:]
    return {"params": params, "types": {}}


def _describe(obj, path):
    import cupy
    if path in _KNOWN:
        return dict(_KNOWN[path], kind="function")
    if isinstance(obj, cupy.ufunc):
        entry = {"kind": "ufunc", "nin": obj.nin, "nout": obj.nout,
                 "methods": [m for m in ("reduce", "accumulate", "reduceat", "outer", "at")
                             if hasattr(obj, m)]}
        entry.update(_parse_doc_signature(obj.__doc__) or {"params": None})
        return entry
    if inspect.ismodule(obj):
        return {"kind": "module"}
    if inspect.isclass(obj):
        entry = {"kind": "class"}
        entry.update(_read_signature(obj) or _parse_doc_signature(obj.__doc__)
                     or {"params": None})
        return entry
    if callable(obj):
        entry = {"kind": "function"}
        entry.update(_read_signature(obj) or {"params": None})
        return entry
    return {"kind": "value"}


def _resolve(path):
    import importlib
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def read_cupy():
    """The manifest of the CuPy importable in this process."""
    import cupy
    out = {"cupy_version": cupy.__version__, "namespaces": {}, "classes": {}}
    for ns in NAMESPACES:
        module = _resolve(ns)
        names = getattr(module, "__all__", None) or dir(module)
        entries = {}
        for name in sorted(set(names) | set(dir(module))):
            if name.startswith("_"):
                continue
            try:
                entries[name] = _describe(getattr(module, name), f"{ns}.{name}")
            except Exception:  # lazily imported names that need a GPU
                entries[name] = {"kind": "value"}
        out["namespaces"][ns] = entries
    for path in CLASSES:
        cls = _resolve(path)
        entries = {}
        for name in sorted(dir(cls)):
            if name.startswith("_") and name not in ("__call__", "__enter__", "__exit__",
                                                     "__dlpack__", "__dlpack_device__",
                                                     "__cuda_array_interface__", "__getitem__",
                                                     "__setitem__", "__len__", "__iter__",
                                                     "__array_namespace__"):
                continue
            try:
                attr = inspect.getattr_static(cls, name)
            except AttributeError:
                continue
            member = getattr(cls, name, None)
            if isinstance(attr, (property, staticmethod)) or type(attr).__name__ in (
                    "getset_descriptor", "member_descriptor"):
                entries[name] = {"kind": "value"}
            else:
                entries[name] = _describe(member, f"{path}.{name}")
        out["classes"][path] = entries
    return out


# ------------------------------------------------------------------ checking (the stand-in)

@functools.lru_cache(maxsize=None)
def load():
    with open(MANIFEST) as f:
        return json.load(f)


def _table(where):
    data = load()
    return data["namespaces"].get(where) or data["classes"].get(where)


def has(where, name):
    table = _table(where)
    return table is not None and name in table


def spec(where, name):
    table = _table(where)
    return None if table is None else table.get(name)


def _version():
    return load()["cupy_version"]


def check_name(where, name):
    """``AttributeError`` unless CuPy's ``where`` (a module or class path) has ``name``."""
    if not has(where, name):
        raise AttributeError(f"{where} has no attribute {name!r} in CuPy {_version()} "
                             "(tests/cupy_api.json): the stand-in serves only what CuPy has")


@functools.lru_cache(maxsize=None)
def signature_of(where, name):
    """An :class:`inspect.Signature` for CuPy's ``where.name``, or None where unknown."""
    entry = spec(where, name)
    if entry is None or not entry.get("params") and entry.get("params") != []:
        return None
    default = object()
    params = [inspect.Parameter(n, getattr(inspect.Parameter, kind),
                                default=default if has_default else inspect.Parameter.empty)
              for n, kind, has_default in entry["params"]]
    return inspect.Signature(params)


def check_call(where, name, args, kwargs):
    """``TypeError`` unless CuPy's ``where.name`` takes these arguments."""
    check_name(where, name)
    sig = signature_of(where, name)
    if sig is None:
        return
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"CuPy {_version()} {where}.{name}{sig} refuses this call: {exc} "
                        "(tests/cupy_api.json)") from None
    for param, type_name in spec(where, name).get("types", {}).items():
        if param in bound.arguments and not isinstance(bound.arguments[param],
                                                       getattr(builtins, type_name)):
            raise TypeError(f"CuPy {_version()} {where}.{name} takes {param} as a {type_name}, "
                            f"not {type(bound.arguments[param]).__name__} (tests/cupy_api.json)")


def check_ufunc(name, method, args, kwargs):
    """What ``cupy.ndarray.__array_ufunc__`` does with a NumPy ufunc: CuPy's namesake runs."""
    if method == "__call__":  # getattr(cupy, name)(*inputs, **kwargs), ufunc or not (matmul)
        check_call("cupy", name, args, kwargs)
        return
    check_name("cupy", name)
    if method not in spec("cupy", name).get("methods", ()):
        raise TypeError(f"cupy.{name}.{method} does not exist in CuPy {_version()}")


def differences(recorded, current):
    """What differs between two manifests, a line each (empty where they agree)."""
    lines = []
    for part in ("namespaces", "classes"):
        for where in sorted(set(recorded[part]) | set(current[part])):
            old, new = recorded[part].get(where, {}), current[part].get(where, {})
            for name in sorted(set(old) | set(new)):
                a, b = old.get(name), new.get(name)
                if a is not None and b is not None and "value" in (a["kind"], b["kind"]):
                    continue  # a name resolved only with (or without) a GPU: still there
                if a != b:
                    lines.append(f"{where}.{name}: recorded {old.get(name)}, "
                                 f"installed {new.get(name)}")
    return lines


def main(argv):
    if argv[1:] not in (["--write"], ["--check"]):
        print("usage: python tests/cupy_api.py --write|--check   (with the real CuPy importable)")
        return 2
    data = read_cupy()
    if argv[1] == "--check":
        recorded = load()
        if recorded["cupy_version"] != data["cupy_version"]:
            print(f"recorded CuPy {recorded['cupy_version']}, installed {data['cupy_version']}")
            return 3
        lines = differences(recorded, data)
        print("\n".join(lines) or f"tests/cupy_api.json matches CuPy {data['cupy_version']}")
        return 1 if lines else 0
    with open(MANIFEST, "w") as f:
        json.dump(data, f, indent=0, sort_keys=True)
        f.write("\n")
    n = sum(len(v) for v in data["namespaces"].values()) + sum(
        len(v) for v in data["classes"].values())
    print(f"wrote {MANIFEST}: CuPy {data['cupy_version']}, {n} names")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
