"""The backbone replica's batch wait: short while it idles, a share of a forward while it is saturated."""

import pytest

from skr_ray.serve.backbone import AdaptiveBatchWait


def test_idle_replica_waits_the_floor():
    wait = AdaptiveBatchWait(floor=0.01, ceiling=0.2)
    assert wait.after(10.0, 10.4) == 0.01  # the first batch: nothing ran before it
    assert wait.after(20.0, 20.4) == 0.01  # idled 9.6 s before it: a lone request, no extra wait


def test_saturated_replica_waits_a_share_of_the_last_forward_up_to_the_ceiling():
    wait = AdaptiveBatchWait(floor=0.01, ceiling=0.2)
    wait.after(0.0, 0.4)
    assert wait.after(0.41, 0.81) == pytest.approx(0.1)  # started 0.01 s after the last: a quarter of 0.4 s
    assert wait.after(0.82, 2.82) == 0.2  # a 2 s forward: capped
    assert wait.after(2.83, 2.85) == 0.01  # a tiny batch: never under the floor


def test_fixed_wait_when_ceiling_equals_floor():
    wait = AdaptiveBatchWait(floor=0.05, ceiling=0.05)
    wait.after(0.0, 1.0)
    assert wait.after(1.0, 2.0) == 0.05
