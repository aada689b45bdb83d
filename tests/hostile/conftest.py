"""Hypothesis profiles for the hostile-input tier.

`ci` (the default: .ci/run sets nothing, so CI gets it too) is derandomized: every run draws the
same examples, so a red CI run is reproduced by running the same commit. `dev`
(SRIOVDRA_HYPOTHESIS_PROFILE=dev) draws new examples each run; on a failure Hypothesis prints the falsifying
example and the blob to replay it (print_blob), and `--hypothesis-seed=N` replays a seed.
Neither keeps an example database (several helpers share this tree; a stored failing example
would make runs differ); Hypothesis's own cache dir .hypothesis/ carries a .gitignore of its own.
Budgets are per test (settings(max_examples=...)) so that the whole directory
stays near a minute on two cores; HYPOTHESIS_EXAMPLES_SCALE (float) scales them for a long soak.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture])
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("dev", **_COMMON)
settings.load_profile(os.environ.get("SRIOVDRA_HYPOTHESIS_PROFILE") or "ci")


def examples(n: int) -> int:
    """A test's example budget, scaled by HYPOTHESIS_EXAMPLES_SCALE (a soak run sets e.g. 20)."""
    return max(1, int(n * float(os.environ.get("HYPOTHESIS_EXAMPLES_SCALE", "1"))))
