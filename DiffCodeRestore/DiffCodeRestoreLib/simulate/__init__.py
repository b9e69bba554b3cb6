"""Physics-based degradation simulators: pure functions of (image, spacing, parameters, seed).

``mri`` (numpy only; ships with the pipeline): k-space truncation and zero-filled interpolation.
``radon``: batched parallel-beam projector and filtered back-projection (torch).
``ct``: low-dose CT by projection-domain noise insertion.
``pet``: FDG-like activity, attenuation and matched full-/low-count MLEM reconstructions.
Submodules are imported on demand so that the MRI operators need nothing but numpy.
"""
