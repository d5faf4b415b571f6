"""deploy/systemd/edgeblur.service against systemd itself and against its device rules.

``systemd-analyze verify`` (Debian package ``systemd``) parses the unit as systemd 252 does and
reports unknown keys, bad values and missing executables; it runs against a throwaway root that
holds a stand-in ``edgeblur`` executable and the host's own unit files, so it needs neither
systemd as PID 1 nor root. The device policy cannot be exercised without a cgroup and a GPU, so
it is modelled from systemd.resource-control(5) and systemd.exec(5): which options add entries
to the allow list, and what DevicePolicy=auto does once the list is not empty.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "edgeblur.service"
HOST_UNITS = Path("/usr/lib/systemd/system")
# Options that add to DeviceAllow= without naming it (systemd's unit_patch_contexts).
IMPLIED_ALLOW = {"ProtectClock": "char-rtc r"}
# What DevicePolicy=closed (and auto with a list) still admits: the pseudo devices.
PSEUDO = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}
# GPU nodes the service must reach, with the /proc/devices group of their major number: the
# x86 driver registers major 195 as "nvidia-frontend" (older) or "nvidia" (newer) and
# nvidia-uvm under its own name; a Jetson's nvhost nodes each have their own group.
GPU_NODES = {
    "/dev/nvidia0": ("nvidia-frontend", "nvidia"),
    "/dev/nvidiactl": ("nvidia-frontend", "nvidia"),
    "/dev/nvidia-uvm": ("nvidia-uvm",),
    "/dev/nvhost-ctrl": ("nvhost-ctrl",),
    "/dev/nvhost-ctrl-gpu": ("nvhost-ctrl-gpu",),
}


def service_settings(text: str) -> list[tuple[str, str]]:
    """(key, value) of every assignment in [Service], in order; repeated keys kept."""
    out, section = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


def device_policy(settings: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """(effective policy, allow list) as systemd computes them from the unit's options."""
    policy, allow = "auto", []
    for key, value in settings:
        if key == "DevicePolicy":
            policy = value
        elif key == "DeviceAllow":
            allow = [] if value == "" else [*allow, value]  # an empty assignment resets
        elif key in IMPLIED_ALLOW and value in ("yes", "true", "1"):
            allow.append(IMPLIED_ALLOW[key])
        elif key == "PrivateDevices" and value in ("yes", "true", "1"):
            policy = "closed"
    return policy, allow


def admits(policy: str, allow: list[str], node: str, groups: tuple[str, ...]) -> bool:
    """Whether a process of the unit may open ``node`` for reading and writing."""
    if policy == "auto" and not allow:
        return True
    if node in PSEUDO and policy != "strict":
        return True
    for entry in allow:
        spec, _, access = entry.partition(" ")
        if "r" not in (access or "rwm") or "w" not in (access or "rwm"):
            continue
        if spec == node:
            return True
        if spec.startswith("char-") and any(fnmatch.fnmatch(g, spec[5:]) for g in groups):
            return True
    return False


@pytest.mark.parametrize("node", sorted(GPU_NODES))
def test_unit_device_policy_admits_the_gpu_nodes(node: str) -> None:
    policy, allow = device_policy(service_settings(UNIT.read_text()))
    assert admits(policy, allow, node, GPU_NODES[node]), (
        f"DevicePolicy={policy} with DeviceAllow={allow} blocks {node}"
    )


def test_device_model_catches_what_protect_clock_did() -> None:
    """The check above fails on the unit as it was: ProtectClock=yes closed the list."""
    before = service_settings("[Service]\nDevicePolicy=auto\nProtectClock=yes\n")
    policy, allow = device_policy(before)
    assert allow == ["char-rtc r"]
    assert not admits(policy, allow, "/dev/nvidia0", GPU_NODES["/dev/nvidia0"])
    assert not admits(policy, allow, "/dev/nvhost-ctrl", GPU_NODES["/dev/nvhost-ctrl"])
    assert admits(policy, allow, "/dev/null", ())
    fixed = [*before, ("DeviceAllow", "char-nvidia* rw"), ("DeviceAllow", "char-nvhost* rw")]
    policy, allow = device_policy(fixed)
    assert admits(policy, allow, "/dev/nvidia0", GPU_NODES["/dev/nvidia0"])
    assert admits(policy, allow, "/dev/nvhost-ctrl", GPU_NODES["/dev/nvhost-ctrl"])
    assert not admits("closed", [], "/dev/nvidia0", GPU_NODES["/dev/nvidia0"])


def test_unit_keeps_its_hardening() -> None:
    settings = dict(service_settings(UNIT.read_text()))
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectKernelModules": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "~@clock",
    }.items():
        assert settings.get(key) == value, key
    assert "PrivateDevices" not in settings and "ProtectClock" not in settings


def test_unit_install_instructions_work_on_an_empty_root(tmp_path: Path) -> None:
    """Every `install` line of the unit's comments, run under a throwaway root."""
    lines = re.findall(r"^#[ \t]+(install .*?)(?:[ \t]+#.*)?$", UNIT.read_text(), re.MULTILINE)
    assert len(lines) >= 4, lines
    root = tmp_path / "root"
    work = tmp_path / "work"
    work.mkdir()
    (work / "cameras.yaml").write_text("cameras: []\n")
    shutil.copyfile(UNIT, work / "edgeblur.service")
    for line in lines:
        cmd = re.sub(r" -[og] \S+", "", line)  # no edgeblur user here
        cmd = re.sub(r" /(etc|var)/", rf" {root}/\1/", cmd)
        result = subprocess.run(
            ["bash", "-c", cmd], cwd=work, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, f"{line}: {result.stderr.strip()}"
    assert (root / "etc/edgeblur/cameras.yaml").is_file()
    assert (root / "etc/edgeblur/edgeblur.env").stat().st_mode & 0o777 == 0o600
    assert (root / "etc/systemd/system/edgeblur.service").read_text() == UNIT.read_text()


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not HOST_UNITS.is_dir():
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    root = tmp_path / "root"
    # The unit's executables: edgeblur, and ExecReload's /bin/kill (procps, in every Debian base).
    for exe in (root / "opt/edgeblur/venv/bin/edgeblur", root / "bin/kill"):
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    # The unit's default dependencies (sysinit.target, ...) must resolve inside the root.
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copyfile(UNIT, root / "etc/systemd/system/edgeblur.service")
    result = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", "edgeblur.service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys too and only warns: any output is a finding.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )
