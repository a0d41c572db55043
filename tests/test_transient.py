"""Only what a retry can cure is retried, inside the step; a ShrinkError exits at once with its own code."""

import time

import pytest

from shrink import storage, transient
from shrink.errors import ShrinkError, TransientError
from shrink.kfp_io import EXIT_EXPECTED, EXIT_TRANSIENT, component_main


def _flaky(failures, error=TransientError):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= failures:
            raise error("s3://b/k: object store at http://x is not reachable")
        return "ok"

    return call, calls


def test_transient_errors_are_retried_within_the_budget():
    waits = []
    call, calls = _flaky(2)
    assert transient.retrying(call, "t", budget=60, sleep=waits.append) == "ok"
    assert len(calls) == 3 and waits == [2.0, 4.0]


def test_expected_errors_are_never_retried():
    call, calls = _flaky(5, error=ShrinkError)
    with pytest.raises(ShrinkError):
        transient.retrying(call, "t", budget=60, sleep=lambda s: None)
    assert len(calls) == 1


def test_no_budget_means_one_attempt_and_nesting_does_not_multiply(monkeypatch):
    monkeypatch.delenv(transient.BUDGET_ENV, raising=False)
    call, calls = _flaky(1)
    with pytest.raises(TransientError):
        transient.retrying(call, "t")
    inner, inner_calls = _flaky(10)
    with pytest.raises(TransientError):
        transient.retrying(lambda: transient.retrying(inner, "inner", budget=60), "outer", budget=0)
    assert len(inner_calls) == 1


def test_a_store_that_is_down_is_transient_and_retried_for_the_budget(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{storage.free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv(transient.BUDGET_ENV, "3")
    start = time.monotonic()
    with pytest.raises(TransientError, match="not reachable"):
        storage.get_json("s3://shrink/anything.json")
    assert 2.5 <= time.monotonic() - start < 30


def test_component_exit_codes_tell_expected_from_transient(capsys):
    for error, code in (
        (ShrinkError("data.source: bad"), EXIT_EXPECTED),
        (TransientError("s3://x: down"), EXIT_TRANSIENT),
    ):
        with pytest.raises(SystemExit) as exc, component_main("step"):
            raise error
        assert exc.value.code == code
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {error}"
