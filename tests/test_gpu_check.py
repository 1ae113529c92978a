"""bench/gpu_check.sh rehearsed on the CPU, so that its one call on a GPU machine cannot fail
on a typo (issue 15).

``GPUCORR_FAKE_GPU=1 bench/gpu_check.sh`` runs every stage on the CPU stand-in for CuPy
(tests/fake_cupy.py), tiny, labelled EMULATED; here with the smallest selections. A
second run takes the GPU branch of the script itself (the one the GPU machine runs:
``pytest --gpu``, compute-sanitizer, no rehearsal switches) with the stand-in slipped
in underneath (a ``sitecustomize`` that installs it, a stub compute-sanitizer that
runs its command). Neither is a GPU run; their figures mean nothing.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import cuda_emulator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")
TINY = {
    "GPU_CHECK_TESTS": "tests/test_device.py -k auto_picks_the_gpu",
    "GPU_CHECK_SMOKE": "--quick",
    "GPU_CHECK_BENCH": "--frames 4 --stream-frames 4 --cpu-frames 2 --ref-frames 1 "
                       "--ref-numpy-frames 0 --copy-mib 16 --rounds 1",
}


@pytest.fixture(scope="module", autouse=True)
def emulator():
    reason = cuda_emulator.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the CUDA emulator cannot run here: {reason}")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GPU_CHECK_", "GPUCORR_", "PYTEST_")) and k not in ("OUT",)}
    env.update(TINY, PYTHON=sys.executable, **extra)
    return env


def _results_listing():
    path = os.path.join(ROOT, "bench", "results")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _run(env, *stages, timeout=240):
    return subprocess.run(["bash", SCRIPT, *stages], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _report(out_dir):
    [name] = [n for n in os.listdir(out_dir) if n.endswith(".json")]
    with open(os.path.join(out_dir, name)) as f:
        return name, json.load(f)


def test_script_parses():
    done = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_rehearsal_on_the_stand_in(tmp_path):
    before = _results_listing()
    done = _run(_env(GPUCORR_FAKE_GPU="1", OUT=str(tmp_path)))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert _results_listing() == before            # nothing written under bench/results/
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("== EMULATED REHEARSAL")
    assert lines[-1] == "result: all stages ok"    # the summary comes last
    assert "EMULATED on the CPU stand-in" in lines[-2]
    name, report = _report(tmp_path)
    assert name.startswith("emulated-gpu-check-")
    assert (tmp_path / name.replace(".json", "-logs") / "tests.log").exists()
    assert report["emulated"] is True and "CPU-emulated" in report["device"]
    status = {s["stage"]: s["status"] for s in report["stages"]}
    assert status == {"setup": "ok", "tests": "ok", "memcheck": "skipped",
                      "racecheck": "skipped", "bench": "ok"}
    assert all(s["seconds"] <= s["time_box_s"] + 15 for s in report["stages"])
    assert report["tests"]["gpu_suite"]["passed"] >= 1
    assert report["sanitizers"]["memcheck"]["smoke"] == "ok"
    assert "upsample.cu" in report["sanitizers"]["memcheck"]["kernels_run"]
    # figures recorded, never judged against the targets
    assert len(report["targets"]) == 4 and all(t["met"] is None for t in report["targets"])
    assert report["bench"]["rows"][0]["gpu_frames_per_s"] > 0
    assert "met" in done.stdout and "n/a (emulated)" in done.stdout


def test_rehearsal_refuses_to_write_into_bench_results():
    before = _results_listing()
    done = _run(_env(GPUCORR_FAKE_GPU="1", OUT="bench/results"))
    assert done.returncode == 2
    assert "does not write under bench/results/" in done.stdout
    assert _results_listing() == before


def test_unknown_stage_is_refused(tmp_path):
    done = _run(_env(GPUCORR_FAKE_GPU="1", OUT=str(tmp_path)), "tests", "memchek")
    assert done.returncode == 2 and "unknown stage memchek" in done.stdout


def _probe_wheel(folder):
    """A pure-Python wheel holding the module ``gpucheckprobe``."""
    import zipfile
    folder.mkdir()
    info = "gpucheckprobe-0.1.dist-info"
    files = {"gpucheckprobe.py": "VALUE = 15\n",
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpucheckprobe\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / "gpucheckprobe-0.1-py3-none-any.whl", "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


def test_the_gpu_branch_on_the_stand_in(tmp_path):
    """The branch a GPU machine takes (wheels installed, ``pytest --gpu``,
    compute-sanitizer), with the stand-in installed by a sitecustomize and a stub
    sanitizer; a failing stage fails the run without stopping the others."""
    _probe_wheel(tmp_path / "wheels")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {HERE!r})
        import fake_cupy
        fake_cupy.install()
        from gpucorr.backends import _cuda
        _cuda.BLOCK = _cuda.FAST_THREADS = 32
    """))
    sanitizer = tmp_path / "compute-sanitizer"
    sanitizer.write_text(textwrap.dedent("""\
        #!/bin/sh
        # a stub: --tool TOOL --error-exitcode 1 COMMAND...
        [ "$1" = --version ] && { echo "Version 0 (stub)"; exit 0; }
        tool=$2; shift 4
        "$@"; rc=$?
        echo "========= ERROR SUMMARY: 0 errors ($tool, stub)"
        exit $rc
    """))
    sanitizer.chmod(0o755)
    out = tmp_path / "out"
    env = _env(OUT=str(out), PYTHONPATH=str(site), GPU_CHECK_SANITIZER=str(sanitizer),
               GPUCORR_COMMIT="0000000", GPU_CHECK_WHEELS=str(tmp_path / "wheels"),
               GPU_CHECK_SITE=str(tmp_path / "installed"))
    env["GPU_CHECK_TESTS"] += " tests/test_device.py::no_such_test"   # the tests stage fails
    done = _run(env, "tests", "memcheck", "bench")
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-6000:]
    name, report = _report(out)
    assert name.startswith("gpu-check-") and "0000000" in name
    status = {s["stage"]: s["status"] for s in report["stages"]}
    assert status == {"setup": "ok", "tests": "FAILED", "memcheck": "ok", "bench": "ok"}, text
    assert report["sanitizers"]["memcheck"]["errors"] == 0
    assert report["sanitizers"]["memcheck"]["smoke"] == "ok"
    assert report["compute_sanitizer"] == "Version 0 (stub)"
    assert report["commit"] == "0000000"
    assert report["emulated"] is True          # it knows the CuPy underneath was the stand-in
    assert (tmp_path / "installed" / "gpucheckprobe.py").exists()
    assert "1 wheels from" in report["stages"][0]["note"]
    assert done.stdout.rstrip().splitlines()[-1] == "result: FAILED: tests"
