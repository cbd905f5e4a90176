"""Small helpers of slukd.utils.run."""

from slukd.utils.run import flatten, split_passthrough


def test_split_passthrough():
    assert split_passthrough(["slu", "--jobs", "2", "--", "--lr=0.1", "--"]) == (
        ["slu", "--jobs", "2"],
        ["--lr=0.1", "--"],
    )
    assert split_passthrough(["slu"]) == (["slu"], [])
    assert split_passthrough(["--"]) == ([], [])


def test_flatten_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
