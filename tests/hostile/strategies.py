"""Hypothesis strategies for hostile input: JSON-ish values with the awkward parts (NUL, unicode,
huge strings and numbers, wrong types, deep nesting) and names that try to escape a directory."""

from __future__ import annotations

from hypothesis import strategies as st

# Text that breaks naive code: NUL, path separators, dots, newlines, right-to-left marks, emoji.
AWKWARD = ["", "\x00", "/", "..", ".", "../../etc/passwd", "a/../../b", "%2e%2e%2f", "\n", " ", "\u202e",
           "\U0001f4a9", "\ufeff", "x" * 300, "-", "~", "$(id)", "`id`", ";id", "|id", "*", "\\", ":"]

awkward_text = st.one_of(
    st.sampled_from(AWKWARD),
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("./\x00a-:%"), max_size=20),
    # huge: one repeated character, cheap to draw
    st.builds(lambda c, n: c * n, st.characters(), st.integers(1000, 200_000)),
)

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([0, -1, 2**31, 2**63, -(2**63), 10**40, 65535, 65536, 4095, 4096]),
    st.floats(allow_nan=True, allow_infinity=True),
    awkward_text,
)

json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=5),
    st.dictionaries(awkward_text, children, max_size=5)), max_leaves=20)

# path components that must never leave a directory when joined into a path
hostile_names = st.one_of(st.sampled_from(AWKWARD), st.text(alphabet=st.sampled_from("./\x00ab"), min_size=1,
                                                            max_size=12))
