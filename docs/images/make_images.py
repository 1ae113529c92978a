"""Draw the pictures of docs/tutorial.md again: ``python docs/images/make_images.py``.

Runs the tutorial's python blocks in a temporary folder (as tests/test_docs.py
does) and ``gpucorr demo`` on its default 64 x 64 scan, and copies the PNGs
they write here.
"""
import re
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUTORIAL = HERE.parent / "tutorial.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
COPIES = {  # written by the tutorial -> docs/images
    "tutorial_peaks.png": "tutorial_peaks.png",
    "plots/strain_maps.png": "tutorial_strain.png",
    "plots/strain_error.png": "tutorial_strain_error.png",
    "plots/context.png": "tutorial_context.png",
    "plots/frame_overlay.png": "tutorial_frame.png",
}


def main():
    import os
    from gpucorr.cli import demo
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            namespace = {"__name__": "__docs__"}
            for source in FENCE.findall(TUTORIAL.read_text(encoding="utf-8")):
                exec(compile(source, str(TUTORIAL), "exec"), namespace)
            for src, dst in COPIES.items():
                shutil.copyfile(src, HERE / dst)
            demo.run((64, 64), out_dir="demo")
            for name in ("strain_maps.png", "strain_error.png"):
                shutil.copyfile(Path("demo") / name, HERE / f"demo_{name}")
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main()
