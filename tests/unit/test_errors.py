"""The metric names of the errors a peer can cause (axiomnet/errors.py): stated per class, never derived from it.

Actors count a refused datagram as ``rx_<metric>`` and a refused announcement as ``announce_<metric>``; operators
graph them (docs/OPERATIONS.md). Renaming a class must not rename a metric: the names are pinned here.
"""

from __future__ import annotations

from axiomnet import errors
from axiomnet.errors import RemoteProtocolError

PINNED = {
    errors.RemoteProtocolError: "RemoteProtocolError",
    errors.MalformedPacket: "MalformedPacket",
    errors.InvalidCoordinates: "InvalidCoordinates",
    errors.InvalidAnnouncement: "InvalidAnnouncement",
    errors.ReplayedPacket: "ReplayedPacket",
    errors.DecryptionFailed: "DecryptionFailed",
    errors.UnknownReceiver: "UnknownReceiver",
    errors.RateLimited: "RateLimited",
    errors.InvalidMac: "InvalidMac",
    errors.NotAllowed: "NotAllowed",
    errors.Ignored: "Ignored",
}


def _remote_errors() -> list[type[RemoteProtocolError]]:
    found, todo = [], [RemoteProtocolError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ == errors.__name__]


def test_every_error_a_peer_can_cause_states_its_own_metric_name() -> None:
    for cls in _remote_errors():
        assert "metric" in vars(cls), f"{cls.__qualname__} inherits its metric name: give it its own"
        assert cls.metric.isidentifier(), cls


def test_metric_names_are_pinned_and_distinct() -> None:
    assert {cls: cls.metric for cls in _remote_errors()} == PINNED
    assert len(set(PINNED.values())) == len(PINNED)


def test_a_renamed_subclass_keeps_the_metric_it_states() -> None:
    class ShortRead(errors.MalformedPacket):  # a finer error added later, counted with its parent
        pass

    assert ShortRead.metric == "MalformedPacket"
    assert ShortRead("x").metric == "MalformedPacket"
