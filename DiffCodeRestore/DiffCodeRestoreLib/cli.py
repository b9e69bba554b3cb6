"""The ``diffcode-restore`` command line (also ``python -m DiffCodeRestoreLib``).

    diffcode-restore restore INPUT OUTPUT --task TASK [--scale N] [--device D] [--steps K]
                     [--fidelity W] [--seed S] [--samples N] [--self-ensemble] [--model NAME|FOLDER]
                     [--overwrite]
    diffcode-restore weights list | download [NAME] | path [NAME] | verify [NAME] | clear [NAME]
    diffcode-restore weights import FILE_OR_FOLDER

Every failure the user can cause ends as one line on stderr, without a traceback (``--debug``
shows it): exit 1 for bad input or unavailable weights, 2 for a wrong command line, 130 when
interrupted. Outputs are written complete or not at all; inputs are only ever read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from . import __version__

PROG = "diffcode-restore"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A wrong command line (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="All-in-one MRI/CT/PET restoration with DiffCode.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    restore = commands.add_parser("restore", help="restore a volume, a DICOM series or a folder of volumes")
    restore.add_argument("input", help="NRRD, NIfTI or MHA file, DICOM series folder, or a folder of such")
    restore.add_argument("output", help="NRRD or NIfTI file (.nrrd, .nii, .nii.gz), or a folder for a batch")
    restore.add_argument("--task", required=True, help="mri-sr, ct-denoise or pet-synthesis")
    restore.add_argument("--scale", type=int, default=1, help="MRI super-resolution factor 1, 2 or 4 (default 1)")
    restore.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    restore.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                         help="compute precision: auto (default: float16 on GPUs, bfloat16 on CPUs with native "
                              "bfloat16, else float32) or as named")
    restore.add_argument("--steps", type=int, help="diffusion steps (default: the model's)")
    restore.add_argument("--fidelity", type=float, help="fidelity weight w in [0, 1] (default: the model's)")
    restore.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    restore.add_argument("--samples", type=int, default=1,
                         help="restore N times and write the mean, plus an uncertainty map (per-voxel std)")
    restore.add_argument("--self-ensemble", action="store_true",
                         help="also restore each slice flipped and rotated by 90 degrees and average the 8 results "
                              "(a little better, 8x the time)")
    restore.add_argument("--model", help="catalog model name or a weights folder (default: the default model)")
    restore.add_argument("--batch-size", type=int, help="slices per model call (default: planned from memory)")
    restore.add_argument("--tile-size", type=int, help="largest tile edge in pixels (default: planned)")
    restore.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    restore.add_argument("--quiet", action="store_true", help="no progress bars")

    weights = commands.add_parser("weights", help="list, download, locate, verify, delete or import model weights")
    actions = weights.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    actions.add_parser("list", help="catalog models and whether they are cached or bundled")
    for name, text in (("download", "download into the Hugging Face cache (SHA-256 verified)"),
                       ("path", "print the folder of the verified weights that restore would use"),
                       ("verify", "check the SHA-256 of the cached and bundled copies"),
                       ("clear", "delete the cached copy (the bundled copy stays)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("name", nargs="?", help="model name (default: the default model)")
    imported = actions.add_parser("import", help="put weights files copied by hand into the cache, after checking them")
    imported.add_argument("source", help="model.safetensors / config.json, or a folder holding them")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.command == "restore":
            return run_restore(args)
        return run_weights(args)
    except UsageError as error:
        _error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted; nothing was written.")
        return EXIT_INTERRUPTED
    except Exception as error:  # every failure becomes one line; --debug shows where
        if debug:
            raise
        _error(_one_line(error))
        return EXIT_FAILED


# ----------------------------------------------------------------------------------------------------
# restore


def run_restore(args: argparse.Namespace) -> int:
    from .tasks import get_task
    from .volume_io import VolumeError, read_volume

    get_task(args.task)
    jobs = plan_jobs(Path(args.input), Path(args.output), args.overwrite, args.samples > 1)
    pipeline = None  # loaded once the first input reads well: a bad input is reported first
    failures = 0
    for source, target in jobs:
        try:
            image = read_volume(source)
            pipeline = pipeline or _load_pipeline(args)  # weights or option errors end the whole run
            restore_one(pipeline, image, source, target, args)
        except VolumeError as error:  # this input is bad: in a batch, say so and go on
            if len(jobs) == 1:
                raise
            failures += 1
            _error(_one_line(error))
    if failures:
        _error(f"{failures} of {len(jobs)} inputs failed; the others were restored.")
        return EXIT_FAILED
    return EXIT_OK


def plan_jobs(source: Path, output: Path, overwrite: bool, uncertainty: bool) -> List[Tuple[Path, Path]]:
    """(input, output) pairs: one volume, or every volume in a folder; outputs checked before any work."""
    from .volume_io import (OUTPUT_SUFFIXES, VolumeError, check_output_path, dicom_series_ids, is_image_file,
                            stem_of, suffix_of)

    if not source.exists():
        raise VolumeError(f"{source}: no such file or folder.")
    if source.is_file() or dicom_series_ids(source):
        jobs = [(source, output)]
    else:
        if output.exists() and not output.is_dir():
            raise VolumeError(f"{output}: a batch writes into a folder; give a folder as OUTPUT.")
        if output.resolve() == source.resolve():
            raise VolumeError(f"{output}: the output folder is the input folder; choose another one.")
        jobs = []
        for item in sorted(source.iterdir()):
            if is_image_file(item):
                name = item.name if suffix_of(item) in OUTPUT_SUFFIXES else stem_of(item) + ".nrrd"
                jobs.append((item, output / name))
            elif item.is_dir() and dicom_series_ids(item):
                jobs.append((item, output / (item.name + ".nrrd")))
        if not jobs:
            raise VolumeError(f"{source}: no NRRD, NIfTI, MHA files or DICOM series folders in this folder.")
        output.mkdir(parents=True, exist_ok=True)
    for item, target in jobs:
        check_output_path(target, overwrite, inputs=[item])
        if uncertainty:
            check_output_path(uncertainty_path(target), overwrite, inputs=[item])
    return jobs


def uncertainty_path(output: Path) -> Path:
    from .volume_io import stem_of, suffix_of

    return output.with_name(f"{stem_of(output)}_uncertainty{suffix_of(output)}")


def _load_pipeline(args: argparse.Namespace):
    from .pipeline import DiffCodePipeline

    return DiffCodePipeline.from_pretrained(args.model, device=args.device, show_progress=not args.quiet,
                                            message=_note, precision=args.precision)


def restore_one(pipeline, image, source: Path, target: Path, args: argparse.Namespace) -> None:
    """Restore one volume read from ``source`` and write it (and its uncertainty map) to ``target``."""
    from tqdm.auto import tqdm

    from .volume_io import write_volume

    with tqdm(unit="slice", desc=source.name, disable=args.quiet, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.reset(total=total)
            bar.update(done - bar.n)

        result = pipeline(image, args.task, scale=args.scale, steps=args.steps, fidelity=args.fidelity,
                          seed=args.seed, samples=args.samples, self_ensemble=args.self_ensemble, progress=progress,
                          batch_size=args.batch_size, tile_size=args.tile_size)
    result.metadata["input"] = source.name
    write_volume(result.image, target, result.metadata, overwrite=args.overwrite)
    if result.uncertainty is not None:
        write_volume(result.uncertainty, uncertainty_path(target), {**result.metadata, "map": "uncertainty (std)"},
                     overwrite=args.overwrite)
    if not args.quiet:
        print(f"{source} -> {target}")


# ----------------------------------------------------------------------------------------------------
# weights


def run_weights(args: argparse.Namespace) -> int:
    from . import hub

    catalog = hub.Catalog.load()
    if args.action == "list":
        return _weights_list(catalog)
    if args.action == "import":
        entry, missing = hub.import_weights(args.source, catalog)
        folder = hub.snapshot_folder(entry)
        if missing:
            print(f"imported into {folder}; still missing {', '.join(missing)}: import it too.")
            return EXIT_FAILED
        print(f"imported {entry.name} into {folder}")
        return EXIT_OK
    entry = catalog.get(args.name)
    if args.action == "download":
        folder = hub.download(entry, show_progress=True)
        print(f"{entry.name} (revision {entry.revision[:8]}) verified in {folder}")
    elif args.action == "path":
        print(hub.resolve(entry.name, catalog=catalog, allow_download=False).folder)
    elif args.action == "verify":
        return _weights_verify(catalog, entry)
    elif args.action == "clear":
        removed = hub.clear_cache(entry)
        print(f"deleted the cached {entry.name}" if removed else f"no cached copy of {entry.name}")
    return EXIT_OK


def _weights_list(catalog) -> int:
    from . import hub

    rows = [("MODEL", "TASKS", "STATE", "SIZE", "REVISION")]
    for status in hub.model_status(catalog):
        entry = status.entry
        name = entry.name + (" (default)" if entry.name == catalog.default else "")
        revision = entry.revision[:8] + ("" if entry.published else " (not yet on the Hub)")
        rows.append((name, ",".join(entry.tasks), status.state, f"{entry.size / 1e6:.1f} MB", revision))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return EXIT_OK


def _weights_verify(catalog, entry) -> int:
    from . import hub

    copies = [("cache", hub.snapshot_folder(entry)), ("bundled", catalog.bundled_folder(entry))]
    found_good, found_bad = False, False
    for label, folder in copies:
        if folder is None or not folder.is_dir():
            print(f"{label}: none")
            continue
        report = hub.check_files(folder, entry)
        for filename, state in report.items():
            print(f"{label}: {filename}: {state}")
        found_bad |= any(state not in ("ok", "missing") for state in report.values())
        found_good |= all(report.get(name) == "ok" for name in hub.REQUIRED_FILES)
    if found_bad:
        _error(f"a copy of {entry.name} does not match the catalog: run `{PROG} weights clear` and download again.")
        return EXIT_FAILED
    if not found_good:
        _error(f"no complete copy of {entry.name}: run `{PROG} weights download`.")
        return EXIT_FAILED
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# output helpers


def _note(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"{PROG}: {text}", file=sys.stderr)


def _error(text: str) -> None:
    print(f"{PROG}: error: {text}", file=sys.stderr)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
