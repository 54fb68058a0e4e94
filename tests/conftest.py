"""Settings shared by every tier.

Hypothesis's default 200 ms deadline per example is a timed unit test: on a shared 2-core host a loaded run
failed `test_greedy.py` at 319 ms while the same file passed alone. Speed belongs in tools/bench.py, so the
deadline is off for every property test; the example counts each test sets are kept.
"""

from hypothesis import settings

settings.register_profile("axiomnet", deadline=None)
settings.load_profile("axiomnet")
