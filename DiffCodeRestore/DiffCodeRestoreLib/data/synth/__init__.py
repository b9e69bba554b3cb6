"""Domain-randomised training images synthesised from label maps (after SynthSR / SynthSeg).

FreeSurfer's SynthSR and SynthSeg work on scans of any contrast and resolution without training on
real images of them: every training image is synthesised from a label map with random intensities
per label, texture, partial volume, bias field, deformation, resolution and noise. This package does
the same for the three restoration tasks, in 2D (the model is 2D):

- label maps: random shapes (:func:`random_shapes_labels`: cells, blobs, dots, vessels, sheets) and
  the registry sources (:mod:`.labels`: MNI tissue classes, AAL, ITK classes, lung1 HU classes,
  TotalSegmentator or any integer label volume), each with the tasks it may train;
- geometry (:func:`random_geometry`): any plane of a 3D map, pixel 0.3-3 mm, matrix 96-512, any
  in-plane orientation, flips, stretch, elastic deformation; labels by nearest neighbour;
- HQ physics (:mod:`.intensity`): random MR contrast with texture, bias and Rician noise; CT HU per
  tissue class with texture; PET uptake per organ with lesions, and its attenuation;
- LQ through the project's own simulators (:func:`synth_pair`): k-space truncation by a factor
  drawn from [2, 4] (sometimes per axis), projection-domain CT noise over a dose range from
  photon-starved to nearly clean with 2N views, PET emission with matched MLEM reconstructions.

Everything is a pure function of (label map, spacing, parameters, seed); parameters are data
(:mod:`.params`). ``python -m DiffCodeRestoreLib.data.synth montage --out FILE.png`` draws samples;
``docs/training-data.md`` documents ranges, timings and the proposed recipe shares.
Dev-only (data preparation and training), like the rest of ``data``: nothing here ships in Slicer.
"""

from .bank import SOURCE_SHARES, available_shares, draw_synthetic, pair_from_source, synthetic_cases
from .geometry import draw_grid, random_geometry
from .intensity import (add_head_layers, ct_from_labels, mri_from_labels, pet_activity_from_labels,
                        pet_attenuation_from_labels, resolve_tissues)
from .labels import (LabelMap, aal_labels, combine_masks, hu_classes, itk_class_labels, label_sources_present,
                     label_volume, lung1_hu_labels, mni_tissue_labels, totalsegmentator_labels, training_label_maps)
from .pairs import kspace_truncate_axes, synth_pair
from .params import (CtParams, GeometryParams, MriParams, PetParams, ShapeParams, SynthParams,
                     default_params)
from .shapes import random_shapes_labels
from .tissues import TISSUES, tissue_for_name

__all__ = [
    "SOURCE_SHARES", "available_shares", "draw_synthetic", "pair_from_source", "synthetic_cases",
    "draw_grid", "random_geometry",
    "add_head_layers", "ct_from_labels", "mri_from_labels", "pet_activity_from_labels",
    "pet_attenuation_from_labels", "resolve_tissues",
    "LabelMap", "aal_labels", "combine_masks", "hu_classes", "itk_class_labels", "label_sources_present",
    "label_volume",
    "lung1_hu_labels", "mni_tissue_labels", "totalsegmentator_labels", "training_label_maps",
    "kspace_truncate_axes", "synth_pair",
    "CtParams", "GeometryParams", "MriParams", "PetParams", "ShapeParams", "SynthParams", "default_params",
    "random_shapes_labels", "TISSUES", "tissue_for_name",
]
