"""The routing simulator behind tools/simulate.py: the core's tree, next-hop and lookup code over numpy arrays.

graphs.py builds the topologies, engine.py runs every node's :class:`axiomnet.tree.Tree` decisions in
synchronous heartbeat rounds (one :func:`axiomnet.tree.select_parents` call per round for all nodes),
measure.py forwards sampled packets with :mod:`axiomnet.greedy` and counts lookup messages with
:mod:`axiomnet.bloom`, scenarios.py runs a cold start and the failure cases, sweep.py makes docs/ROUTING.md's
tables and plots.
"""
