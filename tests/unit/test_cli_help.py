"""`edgeblur blur --help` states the config's own defaults: help reads them from the pydantic
fields, so a default changed in config.py cannot leave a stale number in the help."""

from __future__ import annotations

import argparse

from edgeblur import cli
from edgeblur.config import FILE_GAP_S, JOB_FLAGS, JobConfig, default


def blur_actions() -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["blur"]._actions}


def test_every_job_flag_shows_the_config_default() -> None:
    actions = blur_actions()
    # A family has no default: a manifest model knows its own, a user's file needs the flag.
    shown = [n for n in JOB_FLAGS if n in actions and not n.endswith("family")]
    assert len(shown) >= 19
    # A file's stride follows its rate (detect.auto): the help gives the seconds it uses.
    gaps = f"faces every {FILE_GAP_S['face']:g} s and plates every {FILE_GAP_S['plate']:g} s"
    assert gaps in " ".join((actions.pop("stride").help or "").split())
    shown.remove("stride")
    for name in shown:
        expected = f"(default {default(JobConfig, JOB_FLAGS[name])})"
        assert expected in (actions[name].help or ""), name


def test_the_defaults_the_old_help_got_wrong() -> None:
    helps = {name: a.help or "" for name, a in blur_actions().items()}
    assert "(default 0.15)" in helps["thresh"]
    assert "(default 1280)" in helps["plate_size"]
    assert "(default 0.2)" in helps["pad"]
    assert "(default 0.3)" in helps["plate_pad"]
    assert "(default on)" in helps["track"]
