"""Cohorts: a folder or CSV list, a manifest per run, resume, and ``--shard K/N`` across machines."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from DiffCodeRestoreLib.cli import main
from DiffCodeRestoreLib.cohort import parse_shard, read_manifest, select_shard, CohortError
from DiffCodeRestoreLib.data.volumes import load_volume


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Seven real CT crops (different regions of two real chest CTs), as a study folder."""
    folder = tmp_path_factory.mktemp("study")
    for index in range(7):
        volume = load_volume("lung2" if index % 2 else "lung1")
        x, y = 120 + 40 * index, 160 + 20 * index
        sitk.WriteImage(volume[x:x + 48, y:y + 48, 20 + index:22 + index], str(folder / f"case{index:02d}.nrrd"))
    return folder


def restore(tiny_weights, capsys, *args):
    code = main(["restore", *args, "--task", "ct-denoise", "--model", str(tiny_weights), "--quiet",
                 "--precision", "float32"])
    return (code, *capsys.readouterr())


def volumes(folder):
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nrrd"))}


def test_three_shards_give_the_outputs_of_one_run(cohort, tmp_path, tiny_weights, capsys):
    code, _, err = restore(tiny_weights, capsys, str(cohort), str(tmp_path / "whole"))
    assert code == 0, err
    for part in (1, 2, 3):
        code, _, err = restore(tiny_weights, capsys, str(cohort), str(tmp_path / "split"), "--shard", f"{part}/3")
        assert code == 0, err
        assert f"in shard {part}/3" in err
    whole, split = volumes(tmp_path / "whole"), volumes(tmp_path / "split")
    assert sorted(whole) == sorted(split) == [f"case{i:02d}.nrrd" for i in range(7)]
    for name in whole:
        np.testing.assert_array_equal(whole[name], split[name])
    shard_inputs = [{row["input"] for row in read_manifest(tmp_path / "split" / f"diffcode-manifest-shard-{k}-of-3.csv")}
                    for k in (1, 2, 3)]
    assert sum(len(s) for s in shard_inputs) == 7 and set.union(*shard_inputs) == {str(p) for p in cohort.iterdir()}


def test_a_second_run_resumes_and_the_manifest_says_what_happened(cohort, tmp_path, tiny_weights, capsys):
    out = tmp_path / "out"
    out.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(cohort / "case00.nrrd")), str(out / "case00.nrrd"))  # "finished" earlier
    code, _, err = restore(tiny_weights, capsys, str(cohort), str(out))
    assert code == 0, err
    assert "7 inputs: 6 restored, 1 already complete, 0 failed" in err
    rows = read_manifest(out / "diffcode-manifest.csv")
    assert [row["status"] for row in rows].count("done") == 6 and rows[0]["status"] == "skipped"
    assert all(row["model"] == tiny_weights.name and float(row["seconds"]) >= 0 for row in rows if row["status"] == "done")
    code, _, err = restore(tiny_weights, capsys, str(cohort), str(out))
    assert code == 0 and "7 inputs: 0 restored, 7 already complete" in err
    assert len(read_manifest(out / "diffcode-manifest.csv")) == 14  # appended, never rewritten


def test_a_csv_list_with_relative_paths_and_chosen_outputs(cohort, tmp_path, tiny_weights, capsys):
    listing = cohort / "cohort.csv"
    with open(listing, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "output"])
        writer.writerow(["case01.nrrd", str(tmp_path / "named" / "first.nii.gz")])
        writer.writerow(["case02.nrrd", ""])
    try:
        code, _, err = restore(tiny_weights, capsys, str(listing), str(tmp_path / "out"))
    finally:
        listing.unlink()
    assert code == 0, err
    assert (tmp_path / "named" / "first.nii.gz").is_file() and (tmp_path / "out" / "case02.nrrd").is_file()


def test_shards_are_a_deterministic_partition():
    jobs = [(f"in{i}", f"out{i}") for i in range(10)]
    parts = [select_shard(jobs, (k, 4)) for k in range(1, 5)]
    assert sorted(sum(parts, [])) == sorted(jobs) and parts[1] == [jobs[1], jobs[5], jobs[9]]
    for bad in ("0/3", "4/3", "two/3", "3"):
        with pytest.raises(CohortError):
            parse_shard(bad)


def test_a_bad_shard_is_a_usage_error(cohort, tmp_path, tiny_weights, capsys):
    code, _, err = restore(tiny_weights, capsys, str(cohort), str(tmp_path / "out"), "--shard", "5/3")
    assert code == 2 and "K must be between 1 and N" in err
