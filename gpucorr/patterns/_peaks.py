""":class:`PeakTemplates`: one template per peak (fast mode)."""
from gpucorr.patterns._user import UserTemplate

__all__ = ["PeakTemplates"]


class PeakTemplates(UserTemplate):
    """One template per peak: peak ``p`` of every frame is correlated with ``templates[p]``.

    For disks that each look different (dynamical diffraction), e.g. each disk's
    own mean in a reference region (:func:`gpucorr.refine_by_reference` builds
    them). :func:`gpucorr.refine` takes it in fast mode only, with as many peaks
    as templates; every frame is read once.

    Parameters
    ----------
    templates : array_like (P, h, w)
        Real, finite templates, each centred on its pixel ``(h // 2, w // 2)``.
        GPU arrays are copied to the host once.
    search : float, optional
        Search range in pixels, > 0. Default: half the templates' diagonal.

    Attributes
    ----------
    templates : numpy.ndarray (P, h, w)
    search : float

    Raises
    ------
    TypeError
        If ``templates`` is not real-valued or ``search`` not a real number.
    ValueError
        If ``templates`` is not 3-D, is empty, holds NaN or infinity, or
        ``search`` is not > 0.

    Notes
    -----
    A :class:`UserTemplate` of a stack: :meth:`get_mask` places each template
    as :class:`UserTemplate` does
    (its centre on ``sig_shape // 2``) and returns the stack ``(P, H, W)``;
    :meth:`get_template` its ``rfft2`` over the last two axes.

    Backends: NumPy (the masks); the correlation runs on any backend. On a GPU,
    fast mode with per-peak templates runs as separate kernels, not the fused
    one.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((2, 3, 3)); t[0, 1, 1] = 1; t[1, 0, 1] = 1
    >>> pattern = PeakTemplates(t, search=2)
    >>> masks = pattern.get_mask((4, 4))
    >>> masks.shape, [tuple(int(i) for i in np.argwhere(m == 1)[0]) for m in masks]
    ((2, 4, 4), [(2, 2), (1, 2)])
    """

    _ndim = 3
    _name = "templates"

    @property
    def templates(self):
        """The ``(P, h, w)`` stack (the ``template`` attribute of :class:`UserTemplate`)."""
        return self.template
