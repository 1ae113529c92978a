"""Small things of the command line: the install hint fits a source checkout, one error
prefix, the demo's --help."""
import os

import pytest

import gpucorr
from gpucorr import cli
from gpucorr.cli.common import install_hint, with_install_hint


def test_install_hint_in_a_source_checkout():
    root = os.path.dirname(os.path.dirname(os.path.abspath(gpucorr.__file__)))
    if not os.path.exists(os.path.join(root, "pyproject.toml")):
        pytest.skip("gpucorr is not installed from a source checkout here")
    assert install_hint("cuda13") == f"pip install -e '{root}[cuda13]'"
    assert with_install_hint("CuPy is not installed; pip install gpucorr[cuda13]") == (
        f"CuPy is not installed; pip install -e '{root}[cuda13]'")
    assert with_install_hint("nothing to replace") == "nothing to replace"


def test_info_gives_the_install_hint_that_works_here(capsys):
    assert cli.main(["info"]) == 0
    assert "pip install gpucorr[" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["refine"], "gpucorr: error: the following arguments are required: input, --radius\n"),
    (["refine", "x.npy", "--radius"], "gpucorr: error: argument --radius: expected one "
                                      "argument\n"),
    (["demo", "--scan", "x"], "gpucorr: error: argument --scan: must be an integer; "
                              "got 'x'\n"),
])
def test_usage_errors_have_one_prefix(capsys, argv, message):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == message


def test_demo_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 64)" in text and "(default: gpucorr-demo)" in text


def test_the_reference_region_is_recorded_as_it_applies_to_the_scan():
    from gpucorr.cli.steps import reference_text
    from gpucorr.lattice import parse_region
    text = "the median lattice over scan positions "
    assert reference_text("0:10,0:64", None, parse_region("0:10,0:64"), (3, 4)) == (
        text + "[0:3,0:4] (given as 0:10,0:64)")
    assert reference_text("0:2,1:3", None, parse_region("0:2,1:3"), (3, 4)) == (
        text + "[0:2,1:3]")
    assert reference_text(":,0:2", None, parse_region(":,0:2"), (3, 4)) == text + "[:,0:2]"
    assert reference_text("-2:,0:9:2", None, parse_region("-2:,0:9:2"), (3, 4)) == (
        text + "[1:3,0:4:2] (given as -2:,0:9:2)")


def test_the_virtual_bright_field_of_a_frame_does_not_depend_on_the_chunk():
    import numpy as np
    from gpucorr.cli.maps import virtual_bright_field
    frames = np.random.default_rng(4).random((7, 5, 40, 40)) * 1e3
    every = virtual_bright_field(frames, (20.3, 19.6), 9.5)
    for at in ((0, 0), (3, 2), (6, 4)):
        alone = virtual_bright_field(frames[at], (20.3, 19.6), 9.5)
        assert alone == every[at]
        assert virtual_bright_field(frames[at[0]:at[0] + 1], (20.3, 19.6), 9.5)[0, at[1]] == \
            every[at]
