"""Conformance: libertem-blobfinder 0.6.1's own test suite, run against gpucorr.

:mod:`conformance.plugin` swaps gpucorr's modules in for the peer's;
:mod:`conformance.run` fetches the peer's sdist, runs its tests once against
the peer (the control) and once against gpucorr, and compares.
"""
