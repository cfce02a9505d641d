"""scheduler.causes: the one walk over what an exception wraps (fetch and alerts use it)."""

from __future__ import annotations

from scheduler.causes import MAX_CAUSES, causes, find_cause


class Wrapper(Exception):
    """Like urllib3's MaxRetryError: the cause in ``reason``."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason


def test_nearest_first_through_reason_args_cause_and_context():
    refused = ConnectionRefusedError(111, "Connection refused")
    in_args = ValueError("in args")
    try:
        try:
            raise KeyError("context")
        except KeyError:
            raise Wrapper("outer", reason=refused) from in_args
    except Wrapper as caught:
        outer = caught
    found = causes(outer)
    assert found[0] is outer and found[1] is refused and found[2] is in_args
    assert [type(e) for e in found] == [Wrapper, ConnectionRefusedError, ValueError, KeyError]
    assert find_cause(outer, OSError) is refused
    assert find_cause(outer, TimeoutError) is None


def test_a_loop_is_walked_once():
    a, b = Wrapper("a"), Wrapper("b")
    a.reason, b.reason = b, a
    a.__context__ = a
    assert causes(a) == [a, b]


def test_a_deep_chain_is_cut_off():
    deepest = Wrapper("0")
    for n in range(1, 1000):
        deepest = Wrapper(str(n), reason=deepest)
    assert len(causes(deepest)) == MAX_CAUSES
    assert [str(e) for e in causes(deepest, limit=3)] == ["999", "998", "997"]
