"""The traffic ring behind the dashboard's charts: rates, error ratios, quantiles, a bounded
window, and both ways a data plane feeds it (per call, or counts per interval)."""

from __future__ import annotations

import pytest

from tei_reconciler.traffic import BOUNDS, TrafficRing, bucket_of, quantile

from support.clock import FakeClock

EMBED = "/tei_multiplexer.v1.TeiMultiplexer/Embed"


def ring(clock: FakeClock, steps: int = 6) -> TrafficRing:
    """Steps of 10 s; the manual clock starts on a step boundary."""
    return TrafficRing(step_secs=10.0, steps=steps, clock=clock)


def test_a_finished_step_shows_its_rate_error_ratio_and_latency_quantiles(
    fake_clock: FakeClock,
) -> None:
    traffic = ring(fake_clock)
    for _ in range(98):
        traffic.record("a", EMBED, "OK", 0.010)
    traffic.record("a", EMBED, "UNAVAILABLE", 0.500)
    traffic.record("a", EMBED, "INVALID_ARGUMENT", 0.001)  # the caller's fault: no error
    fake_clock.advance(10)
    (a,) = traffic.series("a").instances
    last = a.points[-1]
    assert (last.requests, last.errors, last.rate) == (100, 1, 10.0)
    assert last.error_ratio == 0.01
    assert last.p50_ms == pytest.approx(10, rel=0.15)
    assert last.p99_ms is not None
    assert 10 <= last.p99_ms <= 500 * 1.15
    assert a.methods == {EMBED: 100}


def test_the_step_in_progress_is_not_shown_until_it_ends(fake_clock: FakeClock) -> None:
    traffic = ring(fake_clock)
    traffic.record("a", EMBED, "OK", 0.01)
    assert traffic.series("a").instances[0].requests == 0
    fake_clock.advance(10)
    assert traffic.series("a").instances[0].requests == 1


def test_the_window_keeps_a_point_per_step_and_forgets_older_traffic(
    fake_clock: FakeClock,
) -> None:
    traffic = ring(fake_clock, steps=6)
    start = fake_clock.wall()
    traffic.record("old", EMBED, "OK", 0.01)
    fake_clock.advance(10)
    traffic.record("new", EMBED, "OK", 0.01)
    fake_clock.advance(10)
    series = traffic.series("old").instances[0]
    assert len(series.points) == 5
    assert [p.requests for p in series.points] == [0, 0, 0, 1, 0]
    assert [p.at for p in series.points] == [start - 30 + 10 * i for i in range(5)]
    fake_clock.advance(40)
    assert traffic.instances() == ["new"]
    assert traffic.series("old").instances[0].requests == 0
    fake_clock.advance(10)
    assert traffic.instances() == []


def test_a_snapshot_sums_the_last_minute_of_every_instance_without_points(
    fake_clock: FakeClock,
) -> None:
    traffic = ring(fake_clock, steps=60)
    traffic.record("a", EMBED, "OK", 0.01)  # 70 s before the snapshot: outside the minute
    fake_clock.advance(10)
    for _ in range(6):
        traffic.record("a", EMBED, "OK", 0.02)
        traffic.record("b", EMBED, "INTERNAL", 0.03)
        fake_clock.advance(10)
    snap = traffic.snapshot()
    assert snap.span_secs == 60
    a, b = snap.instances
    assert (a.instance, a.requests, a.rate, a.errors, a.points) == ("a", 6, 0.1, 0, [])
    assert (b.instance, b.errors, b.error_ratio) == ("b", 6, 1.0)


def test_counts_from_a_data_plane_that_reports_intervals_land_in_the_same_ring(
    fake_clock: FakeClock,
) -> None:
    traffic = ring(fake_clock)
    traffic.record_counts("a", requests=40, errors=4, latencies=[(0.005, 20), (0.05, 20)])
    traffic.record_counts("a", requests=0, errors=0)  # an idle interval adds nothing
    fake_clock.advance(10)
    (a,) = traffic.series("a").instances
    assert (a.requests, a.errors, a.error_ratio) == (40, 4, 0.1)
    assert a.p50_ms == pytest.approx(5, rel=0.3)
    assert a.p99_ms == pytest.approx(50, rel=0.3)


def test_an_instance_without_traffic_has_empty_quantiles_not_zeros(
    fake_clock: FakeClock,
) -> None:
    traffic = ring(fake_clock)
    fake_clock.advance(10)
    (a,) = traffic.series("idle").instances
    assert (a.requests, a.rate, a.error_ratio, a.p50_ms, a.p99_ms) == (0, 0.0, None, None, None)
    assert all(p.p99_ms is None for p in a.points)


def test_quantiles_stay_within_abucket_of_of_the_truth_over_the_whole_range() -> None:
    for seconds in (0.0002, 0.003, 0.04, 0.7, 9.0, 80.0):
        buckets = [0] * (len(BOUNDS) + 1)
        buckets[bucket_of(seconds)] = 10
        value = quantile(buckets, 0.5)
        assert value is not None
        assert seconds / 1.3 <= value <= seconds * 1.3
    overflow = [0] * len(BOUNDS) + [5]
    assert quantile(overflow, 0.99) == BOUNDS[-1]


def test_a_ring_needs_a_positive_step_and_room_for_a_finished_step() -> None:
    with pytest.raises(ValueError, match="positive step"):
        TrafficRing(step_secs=0)
    with pytest.raises(ValueError, match="two steps"):
        TrafficRing(steps=1)
