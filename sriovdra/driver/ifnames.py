"""Interface names inside a pod: the config's ifName, or net1, net2... never two alike."""

from __future__ import annotations

from sriovdra.config import RESERVED_IFNAMES

MAX_IFNAME = 15  # IFNAMSIZ - 1
RESERVED = frozenset(RESERVED_IFNAMES)  # the pod's loopback and its CNI interface


def pick_names(wanted: list[str | None], taken: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """One name per device, in order. An explicit name already used (by another claim of the pod,
    or by an earlier device of a multi-device request) gets a numeric suffix: net1, net1-2."""
    used = set(taken) | RESERVED
    out = []
    for want in wanted:
        name = _free(want, used) if want else _next_auto(used)
        used.add(name)
        out.append(name)
    return out


def _next_auto(used: set[str]) -> str:
    n = 1
    while f"net{n}" in used:
        n += 1
    return f"net{n}"


def _free(want: str, used: set[str]) -> str:
    if want not in used:
        return want
    n = 2
    while True:
        suffix = f"-{n}"
        name = want[:MAX_IFNAME - len(suffix)] + suffix
        if name not in used:
            return name
        n += 1
