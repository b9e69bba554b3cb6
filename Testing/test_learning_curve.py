"""The learning-curve report: which folders are its points, their compute, and gains read from the benchmark's JSON."""

import json

import pytest

from DiffCodeRestoreLib.benchmark import learning_curve as lc


def _run(tmp_path, steps, final=True):
    run = tmp_path / "run"
    for step in steps:
        (run / "snapshots" / f"step-{step:05d}").mkdir(parents=True)
    if final:
        (run / "final").mkdir(parents=True)
    log = [{"stage": "stage2", "step": s, "elapsed_s": s * 0.5} for s in range(25, 3001, 25)]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in [{"stage": "stage1", "step": 1, "elapsed_s": 9.0}]
                                             + log) + "\n")
    return run


def test_points_are_the_snapshots_by_step_then_the_final_weights_once(tmp_path):
    run = _run(tmp_path, [1000, 500])
    assert [(s, p.name) for s, p in lc.snapshots(run)] == [(500, "step-00500"), (1000, "step-01000"), (3000, "final")]
    run3000 = _run(tmp_path / "b", [1500, 3000])
    assert [p.name for _, p in lc.snapshots(run3000)] == ["step-01500", "step-03000"]  # final is the last snapshot
    assert lc.cpu_hours(run, 1000, threads=2) == pytest.approx(1000 * 0.5 * 2 / 3600)
    assert lc.cpu_hours(run, 1010, threads=2) == pytest.approx(1000 * 0.5 * 2 / 3600)  # the last logged step


def _method(name, psnr, ssim, subset_psnr, slow=False):
    return {"name": name, "slow": slow, "mean": {"psnr": psnr, "ssim": ssim},
            "mean_on_subset": {"psnr": subset_psnr, "ssim": ssim}}


def test_gains_compare_with_the_best_filter_and_never_with_another_model():
    task_json = {"methods": [_method("input", 20.0, 0.5, 20.0), _method("gaussian", 25.0, 0.7, 25.5),
                             _method("nlm", 26.0, 0.75, 26.0), _method("bm3d", 0.0, 0.0, 27.0, slow=True),
                             _method("base", 30.0, 0.8, 30.0), _method("step-00500", 27.0, 0.78, 26.5),
                             _method("diffcode", 30.0, 0.8, 30.0)]}  # the default model is no filter either
    gains = lc.public_gains(task_json, "step-00500")
    assert gains["best_filter"] == "nlm" and gains["gain_over_filter"] == pytest.approx(1.0)
    assert gains["gain_over_input"] == pytest.approx(7.0) and gains["ssim_over_filter"] == pytest.approx(0.03)
    assert gains["best_on_subset"] == "bm3d" and gains["gain_on_subset"] == pytest.approx(-0.5)


def test_several_runs_are_scored_together_under_names_that_say_which_run(tmp_path):
    """Runs that differ in one lever share one benchmark (filters tuned once): each point is named by its run."""
    a, b = _run(tmp_path / "x", [1000, 2000]), _run(tmp_path / "y", [1000])
    b = b.rename(tmp_path / "y" / "other")
    points = lc.point_names([a, b])
    assert [(name, step) for name, _, _, step in points] == [
        ("run-step-01000", 1000), ("run-step-02000", 2000), ("run-step-03000", 3000),
        ("other-step-01000", 1000), ("other-step-03000", 3000)]
    assert [run for _, _, run, _ in points] == [a, a, a, b, b]
    assert [name for name, *_ in lc.point_names([a], every=2)] == ["step-01000", "step-03000"]  # one run: no prefix
