"""Tissue classes and their physical values, as data: HU, CT texture, FDG uptake, 511 keV attenuation.

A label map says which pixels belong together; a tissue class says what they are made of. Label
maps with semantics (the MNI tissue classes, lung1's HU classes, TotalSegmentator's organs) map
their labels to these classes; labels without one (random shapes, atlas regions for CT) draw a
class at random. MRI ignores the values here: its contrast is random per label by design.

Sources of the ranges (typical adult values, wide on purpose):
- HU: air -1000; lung parenchyma -900..-700; fat -120..-80; water, CSF, bile 0..20; brain white
  matter 20..32, grey matter 32..45; muscle 35..60; liver 45..120 and spleen 40..110 (unenhanced to
  portal venous); kidney up to 200 and blood up to 350 (contrast-enhanced); cancellous bone and
  marrow 150..500; cortical bone 500..1900; calcifications 300..1500.
- Texture: within-class standard deviation in HU (parenchymal heterogeneity, trabeculae).
- SUV (FDG, about 60 min p.i.): brain grey matter 6..12, white matter 1.5..3.5, myocardium 2..15
  (fasting-dependent), liver 1.5..3, kidneys 3..10 and bladder 5..25 (excretion), blood pool
  1.2..2.2, muscle 0.5..1.2, fat 0.2..0.6, lung 0.3..0.8, lesions 4..20.
- mu (1/mm at 511 keV): water 0.0096 (as ``simulate.pet``), bone 0.0151 (as ``simulate.pet``),
  fat 0.0090, lung 0.0025, air 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from ...simulate.pet import MU_BONE_PER_MM, MU_TISSUE_PER_MM

Range = Tuple[float, float]


@dataclass(frozen=True)
class Tissue:
    hu: Range  # mean HU of a label of this class, uniform
    texture_hu: Range  # within-label std in HU, uniform
    suv: Range  # FDG uptake, uniform
    mu_511: float  # attenuation at 511 keV, 1/mm


TISSUES: Dict[str, Tissue] = {
    "air": Tissue((-1010.0, -990.0), (0.0, 2.0), (0.0, 0.0), 0.0),
    "lung": Tissue((-900.0, -700.0), (15.0, 60.0), (0.3, 0.8), 0.0025),
    "fat": Tissue((-120.0, -80.0), (3.0, 10.0), (0.2, 0.6), 0.0090),
    "fluid": Tissue((0.0, 20.0), (1.0, 5.0), (0.0, 0.3), MU_TISSUE_PER_MM),
    "soft_tissue": Tissue((20.0, 60.0), (3.0, 15.0), (0.5, 2.0), MU_TISSUE_PER_MM),
    "muscle": Tissue((35.0, 60.0), (4.0, 12.0), (0.5, 1.2), MU_TISSUE_PER_MM),
    "brain_gm": Tissue((32.0, 45.0), (2.0, 6.0), (6.0, 12.0), MU_TISSUE_PER_MM),
    "brain_wm": Tissue((20.0, 32.0), (2.0, 5.0), (1.5, 3.5), MU_TISSUE_PER_MM),
    "liver": Tissue((45.0, 120.0), (3.0, 10.0), (1.5, 3.0), MU_TISSUE_PER_MM),
    "spleen": Tissue((40.0, 110.0), (3.0, 10.0), (1.2, 2.5), MU_TISSUE_PER_MM),
    "kidney": Tissue((30.0, 200.0), (4.0, 15.0), (3.0, 10.0), MU_TISSUE_PER_MM),
    "bladder": Tissue((0.0, 30.0), (1.0, 5.0), (5.0, 25.0), MU_TISSUE_PER_MM),
    "heart": Tissue((30.0, 180.0), (3.0, 12.0), (2.0, 15.0), MU_TISSUE_PER_MM),
    "blood": Tissue((30.0, 350.0), (2.0, 8.0), (1.2, 2.2), MU_TISSUE_PER_MM),
    "bowel": Tissue((-50.0, 150.0), (5.0, 30.0), (1.0, 4.0), MU_TISSUE_PER_MM),
    "marrow": Tissue((150.0, 500.0), (30.0, 120.0), (1.0, 2.5), 0.0110),
    "bone": Tissue((500.0, 1900.0), (30.0, 150.0), (0.5, 1.5), MU_BONE_PER_MM),
    "calcification": Tissue((300.0, 1500.0), (20.0, 100.0), (0.5, 2.0), MU_BONE_PER_MM),
    "lesion": Tissue((10.0, 80.0), (3.0, 15.0), (4.0, 20.0), MU_TISSUE_PER_MM),
}

# Organ / structure names (TotalSegmentator's, atlas names) -> tissue class, first match wins.
_NAME_RULES: Tuple[Tuple[str, str], ...] = (
    (r"tumor|lesion|infiltrate|hemorrhage", "lesion"),
    (r"lung_vessel|aorta|arter|vein|vena|trunk|atrial_appendage|sinus", "blood"),
    (r"lung|trachea|bronch|larynx_air|nasal_cavity|pharynx", "lung"),
    (r"heart|myocard|atrium|ventricle_(left|right)", "heart"),
    (r"liver", "liver"),
    (r"spleen", "spleen"),
    (r"kidney_cyst|gallbladder|cyst|effusion|ventricle|csf|subarachnoid", "fluid"),
    (r"kidney|adrenal", "kidney"),
    (r"bladder", "bladder"),
    (r"bowel|colon|duodenum|stomach|esophagus", "bowel"),
    (r"brain|cortex|lobe|cerebell|thalamus|caudate|lentiform|nucleus|insula", "brain_gm"),
    (r"capsule|white_matter|spinal_cord", "brain_wm"),
    (r"vertebra|rib|sacrum|skull|sternum|femur|hip|humerus|scapula|clavicul|tibia|fibula|patella|radius|ulna"
     r"|carpal|tarsal|phalang|hyoid|zygomatic|styloid|palate", "bone"),
    (r"fat", "fat"),
    (r"cartilage|disc", "soft_tissue"),
    (r"muscle|gluteus|autochthon|iliopsoas|masseter|temporalis|pterygoid|tongue|scalene|trapezius"
     r"|sternocleido|quadriceps|deltoid|pectoralis|constrictor", "muscle"),
    (r"pancreas|prostate|thyroid|gland|eye|optic|face|soft", "soft_tissue"),
)


def tissue_for_name(name: str) -> Optional[str]:
    """The tissue class of a structure name (``"kidney_left"`` -> ``"kidney"``), None if unknown."""
    lowered = name.lower()
    for pattern, tissue in _NAME_RULES:
        if re.search(pattern, lowered):
            return tissue
    return None


def classes_from_names(names: Mapping[int, str]) -> Dict[int, str]:
    """{label: tissue class} for the labels whose structure name is recognised."""
    out = {}
    for label, name in names.items():
        tissue = tissue_for_name(name)
        if tissue is not None:
            out[int(label)] = tissue
    return out


def check_classes(classes: Mapping[int, str]) -> None:
    unknown = sorted({name for name in classes.values() if name not in TISSUES})
    if unknown:
        raise ValueError(f"Unknown tissue class(es) {unknown}: choose from {', '.join(TISSUES)}.")


# TotalSegmentator v2 "total" task: label -> structure name (totalsegmentator/map_to_binary.py,
# ``class_map["total"]``). Used for its segmentations when no other name table is given.
TOTALSEGMENTATOR_V2: Dict[int, str] = dict(enumerate((
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
    "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
    "kidney_cyst_right", "sacrum", "vertebrae_S1", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3",
    "vertebrae_L2", "vertebrae_L1", "vertebrae_T12", "vertebrae_T11", "vertebrae_T10", "vertebrae_T9",
    "vertebrae_T8", "vertebrae_T7", "vertebrae_T6", "vertebrae_T5", "vertebrae_T4", "vertebrae_T3",
    "vertebrae_T2", "vertebrae_T1", "vertebrae_C7", "vertebrae_C6", "vertebrae_C5", "vertebrae_C4",
    "vertebrae_C3", "vertebrae_C2", "vertebrae_C1", "heart", "aorta", "pulmonary_vein",
    "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left",
    "common_carotid_artery_right", "common_carotid_artery_left", "brachiocephalic_vein_left",
    "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava", "inferior_vena_cava",
    "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right", "iliac_vena_left",
    "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left",
    "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord",
    "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right",
    "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left", "autochthon_right",
    "iliopsoas_left", "iliopsoas_right", "brain", "skull",
    *[f"rib_{side}_{n}" for side in ("left", "right") for n in range(1, 13)],
    "sternum", "costal_cartilages"), start=1))
