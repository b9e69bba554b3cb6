"""The ``diffcode-restore`` command line (also ``python -m DiffCodeRestoreLib``).

    diffcode-restore restore INPUT OUTPUT --task TASK [--scale N] [--device D] [--steps K]
                     [--fidelity W] [--seed S] [--samples N] [--self-ensemble] [--model NAME|FOLDER]
                     [--suv-factor F] [--hu-offset H] [--overwrite]
    diffcode-restore weights list | download [NAME] | path [NAME] | verify [NAME] | clear [NAME]
    diffcode-restore weights import FILE_OR_FOLDER

Every failure the user can cause ends as one line on stderr, without a traceback (``--debug``
shows it): exit 1 for bad input or unavailable weights, 2 for a wrong command line (checked before
anything slow happens), 130 when interrupted (Ctrl-C or SIGTERM). Outputs are written complete or
not at all; inputs are only ever read.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from . import __version__
from .errors import one_line
from .options import MAX_SAMPLES, MAX_SEED, SR_SCALES, OptionError, check_restore_options, smallest_tile

PROG = "diffcode-restore"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A wrong command line (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _bounded(kind: Callable, low=None, high=None, what: str = "") -> Callable[[str], object]:
    """An argparse type that also checks the range, so that a wrong value exits 2 at once."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what or kind.__name__}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            limits = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: it must be {limits}")
        return value
    parse.__name__ = what or kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="All-in-one MRI/CT/PET restoration with DiffCode.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    restore = commands.add_parser("restore", help="restore a volume, a DICOM series or a folder of volumes")
    restore.add_argument("input", help="NRRD, NIfTI, MHA, PNG/TIFF file, DICOM series folder, a folder of such, or a "
                                        "CSV list (column 'input', optional 'output') of a cohort")
    restore.add_argument("output", help="NRRD or NIfTI file (.nrrd, .nii, .nii.gz), or a folder for a batch")
    restore.add_argument("--format", choices=("auto", "dicom"), default="auto",
                         help="auto: from OUTPUT's suffix (.nrrd, .nii, .nii.gz); dicom: a DICOM series folder per "
                              "input (inputs must be DICOM series; every source tag kept but what must change)")
    restore.add_argument("--shard", metavar="K/N",
                         help="restore only the K-th of N parts of a folder or list (e.g. a SLURM array task)")
    restore.add_argument("--task", required=True,
                         help="mri-sr, ct-denoise, pet-synthesis, or auto (from the DICOM modality or the intensities; "
                              "refused when unclear)")
    restore.add_argument("--scale", type=int, default=1, choices=SR_SCALES,
                         help="MRI super-resolution factor 1, 2 or 4 (default 1)")
    restore.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    restore.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                         help="compute precision: auto (default: float16 on GPUs, bfloat16 on CPUs with native "
                              "bfloat16, else float32) or as named")
    restore.add_argument("--steps", type=_bounded(int, 1, what="whole number"),
                         help="diffusion steps (default: the model's)")
    restore.add_argument("--fidelity", type=_bounded(float, 0.0, 1.0, "number"),
                         help="fidelity weight w in [0, 1] (default: the model's)")
    restore.add_argument("--seed", type=_bounded(int, 0, MAX_SEED, "whole number"), default=0,
                         help="random seed, 0 to 2^32-1 (default 0)")
    restore.add_argument("--samples", type=_bounded(int, 1, MAX_SAMPLES, "whole number"), default=1,
                         help="restore N times and write the mean, plus an uncertainty map (per-voxel std)")
    restore.add_argument("--self-ensemble", action="store_true",
                         help="also restore each slice flipped and rotated by 90 degrees and average the 8 results "
                              "(a little better, 8x the time)")
    restore.add_argument("--model", help="catalog model name, the name of an adapted or imported model, or a weights "
                                        "folder (default: the default model)")
    restore.add_argument("--suv-factor", type=_bounded(float, 1e-12, what="number"),
                         help="PET stored in Bq/mL: SUVbw = value x F (F = body weight in g / decay-corrected "
                              "injected dose in Bq); the output is written back in Bq/mL. DICOM PET series get it "
                              "from their tags")
    restore.add_argument("--hu-offset", type=float,
                         help="CT stored without HU (e.g. -1024 for HU+1024 in unsigned voxels): HU = value + H; "
                              "the output keeps the input's convention. 0 restores the values as HU")
    restore.add_argument("--batch-size", type=_bounded(int, 1, what="whole number"),
                         help="slices per model call (default: planned from memory)")
    restore.add_argument("--tile-size", type=_bounded(int, smallest_tile(), what="whole number"),
                         help="largest tile edge in pixels, a multiple of 4 (default: planned)")
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
    imported.add_argument("source", help="model.safetensors / config.json of a catalog model, or a folder holding them; "
                                          "or a weights folder written by `adapt` or export (with checksums.sha256), "
                                          "which is then used by its name")

    adapt = commands.add_parser("adapt", help="fine-tune a model on your own high-quality scans into a new weights "
                                              "folder (the low-quality side is simulated)")
    adapt.add_argument("hq", nargs="+", metavar="HQ",
                       help="high-quality volumes of one task: NRRD, NIfTI, MHA files, DICOM series folders, or "
                            "folders of them; with several volumes the last fifth are held out for validation")
    adapt.add_argument("--task", required=True, choices=("mri-sr", "ct-denoise", "pet-synthesis"))
    adapt.add_argument("--out", required=True, help="new folder for the adapted weights (Hub layout, with a model card "
                                                    "and checksums)")
    adapt.add_argument("--base", help="catalog model name or weights folder to start from (default: the default model)")
    budget = adapt.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=_bounded(float, 0.1, what="number"),
                        help="time for the whole adaptation, reading and simulating included (default 10)")
    budget.add_argument("--iterations", type=_bounded(int, 1, what="whole number"), help="training steps instead")
    adapt.add_argument("--scale", type=_bounded(float, 1.0, 16.0, "number"),
                       help="mri-sr: k-space factor of the simulated low-resolution images (default 4)")
    adapt.add_argument("--i0", type=_bounded(float, 100.0, 1e8, "number"),
                       help="ct-denoise: incident photons per ray of the simulated low dose (default 5e4)")
    adapt.add_argument("--dose-fraction", type=_bounded(float, 0.001, 1.0, "number"),
                       help="pet-synthesis: share of the counts of the simulated low dose (default 1/12)")
    adapt.add_argument("--like", metavar="LQ_FILE",
                       help="one of your real low-quality scans: the level is estimated from it (e.g. the CT noise "
                            "in soft tissue) instead of --scale/--i0/--dose-fraction")
    adapt.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu; under torchrun: one process "
                                                        "per GPU (or CPU processes with gloo)")
    adapt.add_argument("--force", action="store_true",
                       help="write the adapted model even if it is not better than the base on the held-out data")
    adapt.add_argument("--hu-offset", type=float, help="CT stored without HU: HU = value + H (as for restore)")
    adapt.add_argument("--suv-factor", type=_bounded(float, 1e-12, what="number"),
                       help="PET stored in Bq/mL: SUVbw = value x F (as for restore)")
    adapt.add_argument("--seed", type=_bounded(int, 0, MAX_SEED, "whole number"), default=0,
                       help="random seed of the simulation and training (default 0)")
    adapt.add_argument("--threads", type=_bounded(int, 1, what="whole number"),
                       help="CPU threads (default: torch's); on a CPU shared with other work fewer can be faster")
    adapt.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .runtime import configure_own_process

    configure_own_process()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    previous = _interrupt_on_sigterm()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "restore":
            return run_restore(args)
        if args.command == "adapt":
            return run_adapt(args)
        return run_weights(args)
    except UsageError as error:
        _error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted; nothing unfinished was written (outputs completed before are kept).")
        return EXIT_INTERRUPTED
    except Exception as error:  # every failure becomes one line; --debug shows where
        if debug:
            raise
        _error(one_line(error))
        return EXIT_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt_on_sigterm():
    """SIGTERM (a scheduler's time limit, `kill`) ends the run like Ctrl-C: the file being written is
    removed. Returns the previous handler, or None where handlers cannot be set (not the main thread)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------------
# restore


def run_restore(args: argparse.Namespace) -> int:
    from .cohort import CohortError, parse_shard
    from .volume_io import read_volume

    _check_options(args)
    try:
        shard = parse_shard(args.shard)
    except CohortError as error:
        raise UsageError(str(error)) from None
    if args.format == "dicom" and args.samples > 1:
        raise UsageError("uncertainty maps (--samples) are written as NRRD or NIfTI only; leave out --samples or "
                         "--format dicom.")
    plan = plan_jobs(Path(args.input), Path(args.output), args.overwrite, args.samples > 1, shard,
                     dicom=args.format == "dicom")
    if not plan.batch:
        source, target = plan.jobs[0]
        image = read_volume(source)
        task = _task_for(image, source, args)
        restore_one(_load_pipeline(args), image, task, source, target, args)
        return EXIT_OK
    return _run_cohort(plan, args, shard)


def _run_cohort(plan: "Plan", args: argparse.Namespace, shard) -> int:
    """Every input of a folder or list: one bar with ETA, a manifest row per input, a summary at the end.

    A bad input fails alone (the others go on); weights errors end the run. The model is loaded once
    the first input reads well, so a bad input is reported before the model loads.
    """
    import time

    from tqdm.auto import tqdm

    from .cohort import Manifest, manifest_path
    from .volume_io import VolumeError, read_volume

    manifest = Manifest(manifest_path(plan.output, shard))
    for source, target in plan.complete:
        manifest.add(source, target, "skipped", 0.0, message="output complete from an earlier run")
    pipeline, failures, started = None, 0, time.monotonic()
    try:
        with tqdm(plan.jobs, unit="volume", desc="cohort", disable=args.quiet or not plan.jobs) as bar:
            for source, target in bar:
                began = time.monotonic()
                try:
                    image = read_volume(source)
                    task = _task_for(image, source, args)
                    pipeline = pipeline or _load_pipeline(args)  # weights errors end the whole run
                    restore_one(pipeline, image, task, source, target, args, overwrite=True)  # planned above
                    manifest.add(source, target, "done", time.monotonic() - began, pipeline.weights.name,
                                 pipeline.weights.revision or pipeline.weights.sha256[:12])
                except VolumeError as error:  # this input is bad: say so and go on
                    failures += 1
                    manifest.add(source, target, "failed", time.monotonic() - began, message=one_line(error))
                    _error(one_line(error))
    finally:
        manifest.close()
    done = len(plan.jobs) - failures
    summary = (f"{len(plan.jobs) + len(plan.complete)} inputs{'' if shard is None else f' in shard {shard[0]}/{shard[1]}'}: "
               f"{done} restored, {len(plan.complete)} already complete, {failures} failed, in "
               f"{time.monotonic() - started:.1f} s; manifest {manifest.path}")
    _note(summary)
    if failures:
        _error(f"{failures} of {len(plan.jobs)} inputs failed; the others were restored.")
        return EXIT_FAILED
    return EXIT_OK


def _task_for(image, source: Path, args: argparse.Namespace) -> str:
    """The task given, or with ``--task auto`` the one the image shows (said on stderr); task-specific
    options are checked against it here (an input in a batch fails alone)."""
    import SimpleITK as sitk

    from .input_rules import choose_task
    from .volume_io import DICOM_MODALITY_TAG, VolumeError

    if args.task != "auto":
        return args.task
    volume = sitk.GetArrayViewFromImage(image)
    modality = image.GetMetaData(DICOM_MODALITY_TAG) if image.HasMetaDataKey(DICOM_MODALITY_TAG) else None
    choice = choose_task(None, volume, modality, name=source.name, label=str(source))
    try:
        check_restore_options(choice.task, args.scale, suv_factor=args.suv_factor, hu_offset=args.hu_offset)
    except OptionError as error:
        raise VolumeError(f"{source}: task {choice.task} ({choice.reason}): {error}") from None
    _note(f"{source.name}: task {choice.task} ({choice.reason})")
    return choice.task


def _check_options(args: argparse.Namespace) -> None:
    """Every option against the task and the chosen model's limits, before any input is read or
    torch is loaded (a wrong option exits 2 within a second). The weights are only located here."""
    from .tasks import get_task

    try:
        if args.task == "auto":  # task-specific options are checked per input, once its task is known
            check_restore_options("mri-sr", 1, args.steps, args.fidelity, args.seed, args.samples, args.self_ensemble,
                                  args.batch_size, args.tile_size)
        else:
            get_task(args.task)
            check_restore_options(args.task, args.scale, args.steps, args.fidelity, args.seed, args.samples,
                                  args.self_ensemble, args.batch_size, args.tile_size, args.suv_factor, args.hu_offset)
        config = _model_config(args.model) if args.steps is not None else None
        if config is not None and config.get("diffusion", True):
            check_restore_options("mri-sr", steps=args.steps, max_steps=int(config.get("diffusion_timesteps", 1)))
    except (OptionError, ValueError) as error:
        raise UsageError(f"{one_line(error)} (see `{PROG} restore --help`)") from None


def _model_config(model: Optional[str]) -> Optional[dict]:
    """The config.json of the weights a restore would use, if they are here already (no download)."""
    from . import hub

    try:
        folder = hub.resolve(model, allow_download=False, message=lambda text: None).folder
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (hub.WeightsError, OSError, ValueError):
        return None  # not here yet: the model's own limits are checked once it is loaded


class Plan(NamedTuple):
    jobs: List[Tuple[Path, Path]]  # (input, output) still to restore
    complete: List[Tuple[Path, Path]]  # outputs finished by an earlier run (batch only; skipped)
    batch: bool
    output: Path  # the output folder of a batch, the output file otherwise


def plan_jobs(source: Path, output: Path, overwrite: bool, uncertainty: bool,
              shard: Optional[Tuple[int, int]] = None, dicom: bool = False) -> Plan:
    """One volume, or every volume in a folder or CSV list; every output checked before any work.

    In a folder, files that are not volumes are skipped and named; our own partial files (left by a
    killed run) are never inputs, and stale ones in the output folder are removed. Two inputs that
    would be written to the same output name are refused before anything is restored. In a batch,
    an output that exists is complete (outputs appear whole or not at all) and is skipped, unless
    ``overwrite``: that is how a second run resumes. With ``dicom`` every input must be a DICOM series
    and every output is a series folder (``dicom_out.write_dicom_series``).
    """
    from .cohort import LIST_SUFFIX, CohortError, read_cohort_list, select_shard
    from .files import is_partial_file, remove_stale_partials
    from .volume_io import VolumeError, check_output_path, dicom_series_ids

    if not source.exists():
        raise VolumeError(f"{source}: no such file or folder.")
    listed = source.is_file() and source.suffix.lower() == LIST_SUFFIX
    if (source.is_file() and not listed) or (source.is_dir() and dicom_series_ids(source)):
        if is_partial_file(source):
            raise VolumeError(f"{source}: an unfinished output of an interrupted run, not an input.")
        remove_stale_partials(output.parent)
        if dicom:
            _check_dicom_job(source, output, overwrite)
            return Plan([(source, output)], [], False, output)
        check_output_path(output, overwrite, inputs=[source])
        if uncertainty:
            check_output_path(uncertainty_path(output), overwrite, inputs=[source])
        return Plan([(source, output)], [], False, output)
    if output.exists() and not output.is_dir():
        raise VolumeError(f"{output}: a batch writes into a folder; give a folder as OUTPUT.")
    if listed:
        try:
            jobs = [(item, target or output / _output_name(item)) for item, target in read_cohort_list(source)]
        except CohortError as error:
            raise VolumeError(str(error)) from None
    else:
        if output.resolve() == source.resolve():
            raise VolumeError(f"{output}: the output folder is the input folder; choose another one.")
        jobs = _folder_jobs(source, output)
    if dicom:
        jobs = [(item, target.with_name(item.name)) for item, target in jobs]
    _check_distinct_outputs(jobs)
    jobs = select_shard(jobs, shard)
    for folder in sorted({target.parent for _, target in jobs} | {output}):  # a list may name other folders
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(folder)
    todo, complete = [], []
    for item, target in jobs:
        if target.exists() and not overwrite and not target.is_dir():
            complete.append((item, target))
            continue
        if dicom:
            _check_dicom_job(item, target, True)
            todo.append((item, target))
            continue
        # not there, or --overwrite: companions left by an unfinished set (a sidecar) are replaced
        check_output_path(target, True, inputs=[item])
        if uncertainty:
            check_output_path(uncertainty_path(target), True, inputs=[item])
        todo.append((item, target))
    return Plan(todo, complete, True, output)


def _check_dicom_job(source: Path, target: Path, overwrite: bool) -> None:
    """DICOM out needs a DICOM series in (its tags are copied) and a series folder out."""
    from .volume_io import VolumeError, check_writable_folder, dicom_series_ids

    if not (source.is_dir() and dicom_series_ids(source)):
        raise VolumeError(f"{source}: --format dicom needs a DICOM series folder as input (its tags are kept); "
                          "write NRRD or NIfTI for other inputs.")
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise VolumeError(f"{target}: the output exists already; pass --overwrite to replace it.")
    if not target.parent.is_dir():
        raise VolumeError(f"{target.parent}: the output folder does not exist.")
    check_writable_folder(target.parent)


def _output_name(item: Path) -> str:
    """A batch keeps input names; other formats and DICOM folders become NRRD files."""
    from .volume_io import OUTPUT_SUFFIXES, stem_of, suffix_of

    if item.is_dir():
        return item.name + ".nrrd"
    return item.name if suffix_of(item) in OUTPUT_SUFFIXES else stem_of(item) + ".nrrd"


def _folder_jobs(source: Path, output: Path) -> List[Tuple[Path, Path]]:
    """Every volume in a folder (files and DICOM series folders); what is skipped is named."""
    from .files import is_partial_file
    from .volume_io import VolumeError, dicom_series_ids, is_image_file

    jobs, skipped = [], []
    for item in sorted(source.iterdir()):
        if is_partial_file(item):
            continue
        if is_image_file(item) or (item.is_dir() and dicom_series_ids(item)):
            jobs.append((item, output / _output_name(item)))
        elif not item.name.startswith("."):
            skipped.append(item.name + ("/" if item.is_dir() else ""))
    if not jobs:
        raise VolumeError(f"{source}: no NRRD, NIfTI, MHA, PNG/TIFF files or DICOM series folders in this folder.")
    if skipped:
        _note(f"skipped {len(skipped)} item(s) that are not volumes: {', '.join(skipped[:10])}"
              + (", ..." if len(skipped) > 10 else ""))
    return jobs


def _check_distinct_outputs(jobs: List[Tuple[Path, Path]]) -> None:
    """Refuse a batch in which several inputs map to one output (``a.mha``, ``a.nrrd``, ``a/``)."""
    from .volume_io import VolumeError

    by_target = {}
    for source, target in jobs:
        by_target.setdefault(str(target).lower(), []).append(source.name + ("/" if source.is_dir() else ""))
    for target, sources in by_target.items():
        if len(sources) > 1:
            shown = next(t for s, t in jobs if str(t).lower() == target)
            raise VolumeError(f"{', '.join(sources)} would all be written to {shown}; rename one of them or restore "
                              "them separately.")


def uncertainty_path(output: Path) -> Path:
    from .volume_io import stem_of, suffix_of

    return output.with_name(f"{stem_of(output)}_uncertainty{suffix_of(output)}")


def _load_pipeline(args: argparse.Namespace):
    from .pipeline import DiffCodePipeline

    return DiffCodePipeline.from_pretrained(args.model, device=args.device, show_progress=not args.quiet,
                                            message=_note, precision=args.precision)


def restore_one(pipeline, image, task: str, source: Path, target: Path, args: argparse.Namespace,
                overwrite: Optional[bool] = None) -> None:
    """Restore one volume read from ``source`` and write it (and its uncertainty map) to ``target``."""
    from tqdm.auto import tqdm

    from .volume_io import write_volumes

    with tqdm(unit="slice", desc=source.name, disable=args.quiet, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.reset(total=total)
            bar.update(done - bar.n)

        result = pipeline(image, task, scale=args.scale, steps=args.steps, fidelity=args.fidelity,
                          seed=args.seed, samples=args.samples, self_ensemble=args.self_ensemble,
                          suv_factor=args.suv_factor, hu_offset=args.hu_offset, progress=progress,
                          batch_size=args.batch_size, tile_size=args.tile_size)
    result.metadata["input"] = source.name
    if args.format == "dicom":
        from .dicom_out import write_dicom_series

        write_dicom_series(result.image, source, target, task, result.metadata,
                           overwrite=args.overwrite if overwrite is None else overwrite)
        if not args.quiet:
            print(f"{source} -> {target}/ (DICOM series)")
        return
    outputs = [(result.image, target, result.metadata)]
    if result.uncertainty is not None:
        outputs.append((result.uncertainty, uncertainty_path(target), {**result.metadata, "map": "uncertainty (std)"}))
    write_volumes(outputs, overwrite=args.overwrite if overwrite is None else overwrite)
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
        source = Path(args.source)
        if source.is_dir() and (source / hub.MANIFEST_NAME).is_file() and not _holds_catalog_files(source, catalog):
            folder = hub.import_local_model(source)  # adapted or exported by the project: found by name from now on
            print(f"imported {folder.name} into {folder}; use it with --model {folder.name}")
            return EXIT_OK
        entry, missing = hub.import_weights(args.source, catalog)
        folder = hub.snapshot_folder(entry)
        if missing:
            print(f"imported into {folder}; still missing {', '.join(missing)}: import it too.")
            return EXIT_FAILED
        print(f"imported {entry.name} into {folder}")
        return EXIT_OK
    entry = catalog.get(args.name)
    if args.action == "download":
        folder = hub.download(entry, show_progress=True, message=_note)
        print(f"{entry.name} (revision {entry.revision[:8]}) verified in {folder}")
    elif args.action == "path":
        print(hub.resolve(entry.name, catalog=catalog, allow_download=False, message=_note).folder)
    elif args.action == "verify":
        return _weights_verify(catalog, entry)
    elif args.action == "clear":
        removed = hub.clear_cache(entry)
        print(f"deleted the cached {entry.name}" if removed else f"no cached copy of {entry.name}")
    return EXIT_OK


def _holds_catalog_files(folder: Path, catalog) -> bool:
    """Whether a folder holds a catalog model's weights file (then it is a copy of a published model)."""
    from . import hub

    weights = folder / hub.WEIGHTS_FILE
    if not weights.is_file():
        return False
    digest = hub.sha256_of(weights)
    return any(spec.sha256 == digest for entry in catalog.models.values() for spec in entry.files)


def _weights_list(catalog) -> int:
    from . import hub

    rows = [("MODEL", "TASKS", "STATE", "SIZE", "REVISION")]
    notes = []  # a damaged copy: what is wrong and what to do, under the table
    for status in hub.model_status(catalog):
        entry = status.entry
        name = entry.name + (" (default)" if entry.name == catalog.default else "")
        revision = entry.revision[:8] + ("" if entry.published else " (not yet on the Hub)")
        state = status.state
        if state == "to download" and not entry.published:
            state = "missing (not on the Hub: import it)"
        if status.cache_damage:
            state = "damaged in the cache (see below)"
        elif status.bundled_damage:
            state += "; the bundled copy is damaged (see below)"
        rows.append((name, ",".join(entry.tasks), state, f"{entry.size / 1e6:.1f} MB", revision))
        for copy, damage in (("cache", status.cache_damage), ("bundled", status.bundled_damage)):
            if damage:
                where = "cached" if copy == "cache" else "bundled"
                notes.append(f"{entry.name}: the {where} copy is damaged ({', '.join(damage)}): "
                             f"{hub.damage_advice(catalog, entry, copy)}.")
    for model in hub.local_models():  # adapted or imported: used by name, verified by their manifest on load
        size = sum(f.stat().st_size for f in model.folder.iterdir() if f.is_file())
        rows.append((model.name, model.task or "-", "local: " + model.summary, f"{size / 1e6:.1f} MB", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for note in notes:
        print(note)
    return EXIT_OK


def _weights_verify(catalog, entry) -> int:
    from . import hub

    copies = [("cache", hub.snapshot_folder(entry)), ("bundled", catalog.bundled_folder(entry))]
    found_good, damaged = False, []
    for label, folder in copies:
        if folder is None or not folder.is_dir():
            print(f"{label}: none")
            continue
        report = hub.check_files(folder, entry)
        for filename, state in report.items():
            print(f"{label}: {filename}: {state}")
        if any(state not in ("ok", "missing") for state in report.values()):
            damaged.append(label)
        found_good |= all(report.get(name) == "ok" for name in hub.REQUIRED_FILES)
    if damaged:  # one line: which copies, and advice that works (a good cached copy is used before the bundled one)
        what = "the cached and the bundled copies do" if len(damaged) == 2 else (
            f"the {'cached' if damaged[0] == 'cache' else 'bundled'} copy does")
        _error(f"{what} not match the catalog for {entry.name}: {hub.damage_advice(catalog, entry, damaged[0])}.")
        return EXIT_FAILED
    if not found_good:
        how = (f"run `{PROG} weights download {entry.name}`" if entry.published else
               f"{entry.name} is not published on the Hub: run `{PROG} weights import FILE_OR_FOLDER` with a copy "
               "of its files, or reinstall the extension to restore the bundled copy")
        _error(f"no complete copy of {entry.name}: {how}.")
        return EXIT_FAILED
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# output helpers


def _note(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"{PROG}: {text}", file=sys.stderr)


def _error(text: str) -> None:
    print(f"{PROG}: error: {text}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# adapt


def run_adapt(args: argparse.Namespace) -> int:
    """``adapt``: the Python function ``adapt.adapt`` with a progress bar, Ctrl-C and the held-out table.

    The first Ctrl-C (or SIGTERM, e.g. a scheduler's time limit) asks the run to stop after the current
    step; it saves its checkpoint and the best model so far, and the same command resumes it. A second
    Ctrl-C stops at once (what was saved before stays). Under torchrun only rank 0 prints.
    """
    from .errors import CancelToken

    levels = {"scale": "mri-sr", "i0": "ct-denoise", "dose_fraction": "pet-synthesis"}
    for name, task in levels.items():
        if getattr(args, name) is not None and args.task != task:
            raise UsageError(f"--{name.replace('_', '-')} is the level of {task}, not of {args.task} "
                             f"(see `{PROG} adapt --help`)")
    if args.like is not None and getattr(args, next(n for n, t in levels.items() if t == args.task)) is not None:
        raise UsageError(f"give either --like or the level itself, not both (see `{PROG} adapt --help`)")
    cancel = CancelToken()

    def stop(signum, frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        _note("stopping after this step (the checkpoint is kept; Ctrl-C again stops at once)")

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, stop)
        except ValueError:  # not the main thread
            pass
    try:
        return _adapt_with_bar(args, cancel)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _adapt_with_bar(args: argparse.Namespace, cancel) -> int:
    from tqdm.auto import tqdm

    from .adapt import AdaptCancelled, AdaptRefused, adapt

    bar = tqdm(total=100, unit="%", desc="adapt", disable=args.quiet,
               bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {postfix}")

    def progress(update) -> None:
        bar.update(int(100 * update.fraction) - bar.n)
        eta = "" if update.eta_s is None else f", ETA {int(update.eta_s // 60)}:{int(update.eta_s % 60):02d}"
        bar.set_postfix_str(f"{update.phase}: {update.message}{eta}", refresh=False)

    try:
        result = adapt(args.hq, args.task, args.out, base=args.base, minutes=args.minutes, iterations=args.iterations,
                       scale=args.scale, i0=args.i0, dose_fraction=args.dose_fraction, like=args.like,
                       device=args.device, force=args.force, hu_offset=args.hu_offset, suv_factor=args.suv_factor,
                       seed=args.seed, progress=progress, cancel=cancel, message=_note, threads=args.threads)
    except AdaptRefused as error:
        bar.close()
        _error(one_line(error))
        return EXIT_FAILED
    except AdaptCancelled as error:
        bar.close()
        _error(one_line(error))
        return EXIT_INTERRUPTED
    bar.close()
    if result.scores:  # rank 0 (the others of a torchrun job have nothing to say)
        print(result.table())
        print(f"{result.gain_db:+.2f} dB over the base model on the held-out slices; {result.steps} steps, "
              f"{result.total_seconds / 60:.1f} min. Wrote {result.folder}: use it with "
              f"`{PROG} restore INPUT OUTPUT --task {result.task} --model {result.folder}`")
    return EXIT_OK
