"""Fuzz `edgeblur config check` with random YAML: exit 0 or one sentence and exit 2, never a
traceback (an exception escaping ``cli.main`` here) and never a hang (pytest-timeout, and the
bounded loader). In-process, so a few hundred examples cost seconds; three shapes: any YAML
value, camera lists with wrong types in the right places, and raw text full of YAML syntax."""

from __future__ import annotations

import contextlib
import io
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeblur.cli import main

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["name", "url", "output", "source", "detect", "track", "anonymize", "fail_closed", "enabled"]
)
CAMERA = st.dictionaries(KEYS, VALUES, max_size=6) | st.fixed_dictionaries(
    {"name": st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), "url": st.text(max_size=40)},
    optional={
        "output": st.dictionaries(st.sampled_from(["rtsp", "file", "preview", "encode"]), VALUES),
        "source": st.dictionaries(st.sampled_from(["loop", "transport", "open_timeout_s"]), VALUES),
    },
)
CONFIGS = st.fixed_dictionaries(
    {"cameras": st.lists(CAMERA, max_size=3) | VALUES},
    optional={
        "defaults": st.dictionaries(KEYS, VALUES, max_size=3) | VALUES,
        "http": VALUES,
        "scheduler": VALUES,
        "runtime": VALUES,
        "log_level": VALUES,
    },
)
TOKENS = [*"abc:-[]{}&*!|>'\"#%@`,?~ \n\t$", "${X}", "!!python/", "cameras", "url: ", "\n- "]
YAML_TEXT = st.lists(st.sampled_from(TOKENS), max_size=80).map("".join)


def _dump(value: object) -> str:
    try:
        return yaml.safe_dump(value, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return "cameras: []\n"


DOCUMENTS = VALUES.map(_dump) | CONFIGS.map(_dump) | YAML_TEXT


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    # cli.main installs its stop-signal handlers; give pytest its own back afterwards.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=DOCUMENTS)
def test_random_yaml_ends_in_exit_0_or_one_sentence_and_exit_2(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cameras.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["config", "check", str(path)])  # a traceback here fails the test
    assert code in (0, 2), (text, err.getvalue())
    if code == 2:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgeblur: error: "), (text, lines)
