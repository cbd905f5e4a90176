"""Task splits: the papers' fixed orders, seeded random orders, order files and their errors."""

from __future__ import annotations

import pytest

from slukd.continual.scenario import SLURP_SCENARIOS, Scenario, ScenarioError, make_scenario, read_order_file


def test_slurp3_fixed_order_matches_paper():
    s = make_scenario("slurp3", "fixed")
    assert s.tasks == (
        ("calendar", "email", "general", "play", "qa", "social"),
        ("alarm", "audio", "cooking", "datetime", "iot", "lists"),
        ("music", "news", "recommendation", "takeaway", "transport", "weather"),
    )


def test_slurp6_fixed_order_matches_paper():
    s = make_scenario("slurp6", "fixed")
    assert s.n_tasks == 6
    assert s.tasks[0] == ("calendar", "email", "general")
    assert s.tasks[1] == ("play", "qa", "social")
    assert s.tasks[3] == ("datetime", "iot", "lists")
    assert s.tasks[5] == ("takeaway", "transport", "weather")


def test_random_order_is_seeded_and_complete():
    a = make_scenario("slurp6", "random", seed=3)
    b = make_scenario("slurp6", "random", seed=3)
    c = make_scenario("slurp6", "random", seed=4)
    assert a.tasks == b.tasks
    assert a.tasks != c.tasks
    assert sorted(a.classes) == sorted(SLURP_SCENARIOS)
    assert all(len(t) == 3 for t in a.tasks)


def test_indices_per_task_and_seen():
    s = make_scenario("slurp3", "fixed")
    labels = ["email", "alarm", "weather", "qa", "unknown", "iot"]
    assert s.train_indices(labels, 0) == [0, 3]
    assert s.train_indices(labels, 1) == [1, 5]
    assert s.eval_indices(labels, 1) == [0, 1, 3, 5]
    assert s.eval_indices(labels, 2) == [0, 1, 2, 3, 5]
    with pytest.raises(ScenarioError, match="out of range"):
        s.train_indices(labels, 3)


def test_fixed_order_restricted_to_present_classes():
    s = make_scenario("slurp3", "fixed", present=["email", "alarm", "weather", "qa"])
    assert s.tasks == (("email", "qa"), ("alarm",), ("weather",))
    with pytest.raises(ScenarioError, match="no scenario present"):
        make_scenario("slurp3", "fixed", present=["email", "qa"])


def test_joint_is_one_task():
    s = make_scenario("joint", "fixed", present=["weather", "email"])
    assert s.tasks == (("email", "weather"),)


def test_order_file(tmp_path):
    p = tmp_path / "order.txt"
    p.write_text("# my order\nemail, qa\n\nalarm weather  # second\n", encoding="utf-8")
    s = make_scenario("slurp3", str(p), present=["email", "qa", "alarm", "weather"])
    assert s.tasks == (("email", "qa"), ("alarm", "weather"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("email qa\nalarm emial\n", r"order.txt:2: unknown scenario 'emial'"),
        ("email qa\nalarm qa\n", r"order.txt:2: scenario 'qa' already listed on line 1"),
        ("# nothing\n\n", "no task found"),
    ],
)
def test_order_file_errors(tmp_path, text, message):
    p = tmp_path / "order.txt"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match=message):
        read_order_file(p, known=SLURP_SCENARIOS)


def test_order_file_missing_class_and_missing_file(tmp_path):
    p = tmp_path / "order.txt"
    p.write_text("email\nqa\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"not listed: \['alarm'\]"):
        make_scenario("slurp3", str(p), present=["email", "qa", "alarm"])
    with pytest.raises(ScenarioError, match="does not exist"):
        make_scenario("slurp3", str(tmp_path / "nope.txt"))


def test_duplicate_class_rejected():
    with pytest.raises(ScenarioError, match="in tasks 1 and 2"):
        Scenario("x", (("a",), ("a",)))
