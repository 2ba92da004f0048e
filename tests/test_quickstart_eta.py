"""The whole-run estimate of `moma quickstart` (`moma.commands.quickstart_eta`)."""

from moma.commands.quickstart import BUDGETS, REFERENCES, QuickstartConfig, training_stages
from moma.commands.quickstart_eta import Reference, RunEta, fmt_duration
from moma.data import DataConfig

REF = Reference("the reference", {"a": 100.0, "b": 200.0, "c": 300.0, "report": 10.0})


def test_before_quotes_only_the_stages_to_run() -> None:
    assert RunEta(REF, ["b", "c"]).before().startswith("these stages took 8m20s on the reference")


def test_after_scales_the_remaining_reference_by_this_machines_speed() -> None:
    eta = RunEta(REF, ["a", "b", "c", "report"])
    # twice as slow as the reference on "a": the 510 s left become about 1020 s
    assert eta.after("a", 200.0) == (
        "3m20s so far, about 17m00s left (3 stage(s); this machine has taken 2.00x the "
        "reference's time)"
    )
    # the ratio pools every stage run so far: (200 + 100) / (100 + 200) = 1.0
    line = eta.after("b", 100.0)
    assert "about 5m10s left" in line and "1.00x" in line
    assert eta.after("c", 300.0) is not None
    assert eta.after("report", 9.0) is None  # nothing left


def test_stages_without_a_reference_do_not_skew_the_ratio() -> None:
    eta = RunEta(REF, ["new", "a", "b"])
    assert eta.after("new", 50.0) is None  # no timed stage yet: no estimate
    assert "about 3m20s left" in eta.after("a", 100.0)  # ratio 1.0 from "a" alone


def test_fmt_duration() -> None:
    assert (fmt_duration(62.4), fmt_duration(3723)) == ("1m02s", "1h02m03s")


def test_every_budget_has_a_reference_for_every_stage(tmp_path) -> None:
    for name, budget in BUDGETS.items():
        stages = [*training_stages(QuickstartConfig(budget=name), budget, tmp_path, DataConfig())]
        assert set(REFERENCES[name].stage_s) == {*stages, "eval", "report"}, name
