"""Port blocks of private clusters: below the ephemeral range, never `make serve`'s, free."""

import socket

from deployments import local_cluster
from serve_app.settings import Settings


def test_a_free_base_is_a_whole_block_below_the_ephemeral_range_and_not_the_default():
    default = Settings.model_fields["ray_port_base"].default
    low = local_cluster._ephemeral_low()
    for _ in range(50):
        base = local_cluster.free_port_base()
        assert base % 1000 == 0 and base >= 20000 and base + 999 < low and base != default


def test_a_block_whose_fixed_ports_are_held_is_passed_over(monkeypatch):
    first = local_cluster.free_port_base()
    with socket.socket() as held:
        held.bind(("127.0.0.1", first + 4))  # as a cluster's dashboard would
        held.listen()
        # That block comes first in the random order; the next one is taken instead.
        monkeypatch.setattr(
            local_cluster.random, "shuffle", lambda blocks: blocks.sort(key=lambda b: b != first)
        )
        second = local_cluster.free_port_base()
    assert second != first and second % 1000 == 0
