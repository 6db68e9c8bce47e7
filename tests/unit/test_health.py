"""A deployment's circuit breaker: opens on failures, probes once an interval, closes again."""

from __future__ import annotations

from broker.settings import CircuitSettings
from workers.calls.health import (
    RAMP_STEP_S,
    CircuitState,
    DeploymentHealth,
    HealthBoard,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health(clock: Clock, **settings: float) -> DeploymentHealth:
    return DeploymentHealth("p:m", CircuitSettings(**settings), clock)  # type: ignore[arg-type]


def test_consecutive_failures_open_the_circuit_which_then_refuses_calls() -> None:
    clock = Clock()
    h = health(clock, failures=3, open_s=30)
    for _ in range(3):
        assert h.try_acquire()
        h.failed()
    assert h.state is CircuitState.OPEN
    assert not h.try_acquire()
    assert h.available_at() == clock.now + 30


def test_after_the_open_interval_one_probe_at_a_time_and_success_closes() -> None:
    clock = Clock()
    h = health(clock, failures=2, open_s=10)
    for _ in range(2):
        h.try_acquire()
        h.failed()
    clock.now += 10
    assert h.try_acquire()  # the probe
    assert h.state is CircuitState.HALF_OPEN
    assert not h.try_acquire()  # no second call while the probe is out
    h.succeeded(0.1)
    assert h.state is CircuitState.CLOSED
    assert all(h.try_acquire() for _ in range(50))  # closed again: no limit


def test_a_failed_probe_opens_the_circuit_for_another_interval() -> None:
    clock = Clock()
    h = health(clock, failures=1, open_s=10)
    h.try_acquire()
    h.failed()
    clock.now += 10
    assert h.try_acquire()
    h.failed()
    assert h.state is CircuitState.OPEN
    clock.now += 9
    assert not h.try_acquire()


def test_error_rate_over_the_window_opens_without_consecutive_failures() -> None:
    clock = Clock()
    h = health(clock, failures=100, error_rate=0.5, window=10, min_calls=10)
    for i in range(10):
        assert h.try_acquire()
        if i % 2:
            h.failed()
        else:
            h.succeeded(0.01)
    assert h.state is CircuitState.OPEN


def test_a_fresh_deployment_ramps_up_until_its_first_success() -> None:
    clock = Clock()
    h = health(clock, failures=5)
    assert sum(h.try_acquire() for _ in range(100)) == 5  # N calls at first…
    clock.now += 0.02
    assert sum(h.try_acquire() for _ in range(100)) == 5  # …doubling every 20 ms: 10 out
    clock.now += 0.04
    assert sum(h.try_acquire() for _ in range(100)) == 30  # 40 out
    h.succeeded(0.5)
    assert all(h.try_acquire() for _ in range(500))  # proven: no limit


def test_a_call_refused_by_the_ramp_learns_when_the_cap_next_grows() -> None:
    clock = Clock()
    h = health(clock, failures=5)
    assert h.ramp_grows_at() == float("inf")  # no call yet: no ramp
    h.try_acquire()
    assert h.ramp_grows_at() == clock.now + RAMP_STEP_S
    clock.now += 1.5 * RAMP_STEP_S
    assert h.ramp_grows_at() == 1000.0 + 2 * RAMP_STEP_S
    h.succeeded(0.5)
    assert h.ramp_grows_at() == float("inf")  # proven: nothing to wait for


def test_after_a_failure_only_an_outcome_makes_room_not_time() -> None:
    clock = Clock()
    h = health(clock, failures=3)
    h.try_acquire()
    h.failed()
    assert h.ramp_grows_at() == float("inf")


def test_after_a_failure_calls_in_doubt_are_bounded_again() -> None:
    clock = Clock()
    h = health(clock, failures=3)
    h.try_acquire()
    h.succeeded(0.1)
    for _ in range(10):
        assert h.try_acquire()
    h.failed()  # now 9 in flight, 1 failure: nothing more until a success
    assert not h.try_acquire()
    h.succeeded(0.1)
    assert h.try_acquire()


def test_a_rate_limit_pauses_without_counting_as_a_failure() -> None:
    clock = Clock()
    h = health(clock, failures=1)
    h.try_acquire()
    h.rate_limited(retry_after=7)
    assert h.state is CircuitState.CLOSED
    assert not h.try_acquire()
    clock.now += 7
    assert h.try_acquire()


def test_a_dead_deployment_gets_at_most_threshold_calls_then_one_probe_per_interval() -> None:
    clock = Clock()
    h = health(clock, failures=5, open_s=30)
    calls = 0
    for _ in range(120):  # two minutes of one attempt a second, every call failing
        if h.try_acquire():
            calls += 1
            h.failed()
        clock.now += 1
    assert calls <= 5 + 4  # threshold + one probe per 30 s interval


def test_the_board_tracks_each_deployment_once_and_reports_states() -> None:
    board = HealthBoard(CircuitSettings(failures=1))
    board["a:x"].try_acquire()
    board["a:x"].failed()
    assert board["a:x"] is board["a:x"]
    assert board.snapshot() == {"a:x": CircuitState.OPEN}
