"""The systemd units in systemd/: they load, they carry what the daemon relies on, they agree
with the config layout the README shows, and they stay sandboxed.

``systemd-analyze`` checks them offline (no running systemd needed). The units name the
installed program, /opt/sttwatch/venv/bin/sttwatch, so ``verify`` gets copies that name the
sttwatch of this venv instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sttwatch import config as configmod

UNITS = Path(__file__).resolve().parent.parent / "systemd"
PLAIN, TEMPLATE, INSTANCE = "sttwatch.service", "sttwatch@.service", "podcasts"
INSTALLED = "/opt/sttwatch/venv/bin/sttwatch"
MAX_EXPOSURE = 2.0
PING_SECONDS = 2.0  # the daemon's main loop sends WATCHDOG=1 this often while healthy

Unit = dict[str, dict[str, list[str]]]

# Both units, every assignment as the daemon needs it (the last one wins in systemd).
REQUIRED: dict[str, dict[str, str]] = {
    "Unit": {"Wants": "network-online.target", "After": "network-online.target"},
    "Service": {
        "Type": "notify", "NotifyAccess": "main", "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "30s", "Restart": "on-failure", "RestartPreventExitStatus": "2",
        "TimeoutStopSec": "30", "User": "sttwatch", "Group": "sttwatch",
        "ConfigurationDirectory": "sttwatch", "CacheDirectory": "sttwatch",
        "Environment": "XDG_CACHE_HOME=%C/sttwatch",
        "LoadCredential": "aimlapi_key:/etc/sttwatch/aimlapi_key",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "DevicePolicy": "closed",
        "PrivateUsers": "yes", "PrivateIPC": "yes", "PrivateMounts": "yes", "RemoveIPC": "yes",
        "KeyringMode": "private", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "UMask": "0027", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "ProtectProc": "invisible", "ProcSubset": "pid",
        "RestrictNamespaces": "yes", "LockPersonality": "yes", "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes", "SystemCallArchitectures": "native",
        # OpenBLAS calls mbind() (in @resources): EPERM, not SIGSYS, keeps the service alive.
        "SystemCallErrorNumber": "EPERM",
    },
    "Install": {"WantedBy": "multi-user.target"},
}
PER_UNIT: dict[str, dict[str, str]] = {
    PLAIN: {"ExecStart": f"{INSTALLED} run --config /etc/sttwatch/config.yaml",
            "StateDirectory": "sttwatch", "ReadWritePaths": "/srv/recordings"},
    TEMPLATE: {"ExecStart": f"{INSTALLED} run --config /etc/sttwatch/%i.yaml",
               "StateDirectory": "sttwatch/%i", "ReadWritePaths": "/srv/recordings/%i"},
}
# Settings that must stay off, with the reason a test failure should give.
FORBIDDEN = {
    "MemoryDenyWriteExecute": "CTranslate2 (the local engine) JIT-compiles its kernels",
    "IPAddressDeny": "the AI/ML API backend needs the network",
    "PrivateNetwork": "the AI/ML API backend needs the network",
    "DynamicUser": "a transient user cannot own the watched folders",
}
# Settings that switch off a feature: each needs a "BREAKS:" note in the comment above it.
RISKY = ("LoadCredential", "ReadWritePaths", "ProtectHome", "PrivateDevices", "UMask",
         "MemoryDenyWriteExecute")
# The only settings the template may set differently from the plain unit.
PER_INSTANCE = {"Description", "ExecStart", "StateDirectory", "ReadWritePaths"}

# The config the README's "Run as a service" section writes (instances: sed-edited copies).
SERVICE_CONFIG = """\
api:
  api_key_file: "${CREDENTIALS_DIRECTORY}/aimlapi_key"
watch:
  - path: /srv/recordings
state:
  path: /var/lib/sttwatch/sttwatch-state.db
"""


def parse_unit(text: str) -> Unit:
    """Section -> key -> every assignment in order (systemd allows repeated keys such as
    SystemCallFilter=); comments and blank lines dropped, backslash continuations joined."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = (pending + raw.strip()) if pending else raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert section is not None and sep, f"not a KEY=value line in a section: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def load(name: str) -> Unit:
    return parse_unit((UNITS / name).read_text(encoding="utf-8"))


def last(unit: Unit, section: str, key: str) -> str | None:
    """The value systemd uses: the last assignment, or None when the key is not set."""
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


def seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|min|h)?", value):
        total += float(number) * {"ms": 0.001, "": 1, "s": 1, "min": 60, "h": 3600}[unit]
    return total


def instance(text: str, name: str = INSTANCE) -> str:
    return text.replace("%i", name)


@pytest.fixture(scope="module")
def analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is not installed; these tests need it: apt-get install "
                    "systemd (scripts/test.sh installs it)", pytrace=False)
    return exe


def run(analyze: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run([analyze, *args], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", env=env, timeout=60, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both units, copied with ExecStart= naming the sttwatch of this venv."""
    exe = shutil.which("sttwatch", path=str(Path(sys.executable).parent)) or shutil.which(
        "sttwatch")
    if exe is None:
        pytest.fail("no sttwatch executable found: pip install -e . first", pytrace=False)
    exe = exe.replace("%", "%%")
    exe = f'"{exe}"' if " " in exe else exe
    folder = tmp_path_factory.mktemp("units")
    for name in (PLAIN, TEMPLATE):
        text = (UNITS / name).read_text(encoding="utf-8")
        assert text.count(INSTALLED) == 1, f"{name}: ExecStart= should name {INSTALLED} once"
        (folder / name).write_text(text.replace(INSTALLED, exe), encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", [PLAIN, TEMPLATE])
def test_unit_has_the_required_settings(name: str) -> None:
    unit = load(name)
    wanted = {s: dict(kv) for s, kv in REQUIRED.items()}
    wanted["Service"].update(PER_UNIT[name])
    wrong = {f"[{section}] {key}": last(unit, section, key)
             for section, pairs in wanted.items() for key, value in pairs.items()
             if last(unit, section, key) != value}
    assert not wrong, f"{name}: settings differ from the required ones: {wrong}"
    service = unit["Service"]
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert 0 < int(service["Nice"][-1]) < 20
    for key, why in FORBIDDEN.items():
        assert service.get(key, ["no"])[-1] in ("no", "false", ""), f"{key} is on, but {why}"


@pytest.mark.parametrize("name", [PLAIN, TEMPLATE])
def test_timeouts_fit_the_daemon(name: str) -> None:
    service = load(name)["Service"]
    # Several missed pings in a row before systemd restarts it: a busy machine is not a hang.
    assert seconds(service["WatchdogSec"][-1]) >= 5 * PING_SECONDS
    # SIGTERM leaves in a few seconds (pending ids are already stored); leave it room.
    assert seconds(service["TimeoutStopSec"][-1]) >= 15
    assert seconds(service["TimeoutStartSec"][-1]) >= 90  # model loading comes before READY=1


@pytest.mark.parametrize("name", [PLAIN, TEMPLATE])
def test_each_risky_setting_says_what_it_breaks(name: str) -> None:
    lines = (UNITS / name).read_text(encoding="utf-8").splitlines()
    missing = []
    for key in RISKY:
        at = next((i for i, line in enumerate(lines) if re.match(rf"#?{key}=", line)), None)
        if at is None:
            missing.append(f"{key} (not in the unit at all)")
            continue
        above = []
        for line in reversed(lines[:at]):
            if not line.startswith("#") or re.match(r"#\w+=", line):
                break
            above.append(line)
        if not any("BREAKS" in line for line in above):
            missing.append(key)
    assert not missing, f"{name}: no 'BREAKS:' comment above {missing}"


def test_template_differs_only_per_instance() -> None:
    plain, template = load(PLAIN), load(TEMPLATE)
    differ = sorted(
        f"[{section}] {key}"
        for section in plain.keys() | template.keys()
        for key in plain.get(section, {}).keys() | template.get(section, {}).keys()
        if key not in PER_INSTANCE
        and plain.get(section, {}).get(key) != template.get(section, {}).get(key))
    assert not differ, f"the template's sandbox drifted from sttwatch.service: {differ}"


@pytest.mark.parametrize(("name", "unit_name", "config_text"), [
    (PLAIN, PLAIN, SERVICE_CONFIG),
    (TEMPLATE, f"sttwatch@{INSTANCE}.service",
     SERVICE_CONFIG.replace("/srv/recordings", f"/srv/recordings/{INSTANCE}")
     .replace("/var/lib/sttwatch/", f"/var/lib/sttwatch/{INSTANCE}/")),
])
def test_readme_config_fits_the_unit(name: str, unit_name: str, config_text: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The state file lies in StateDirectory=, the watched folder in ReadWritePaths=, the key
    file is the credential, and the config file is the one ExecStart= names."""
    service = load(name)["Service"]
    credential_id = service["LoadCredential"][-1].split(":", 1)[0]
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", f"/run/credentials/{unit_name}")
    config_path = Path(instance(service["ExecStart"][-1]).split("--config ", 1)[1])
    cfg = configmod.parse(config_text, config_path)
    assert config_path.parent == Path("/etc") / service["ConfigurationDirectory"][-1]
    assert cfg.state_path.parent == Path("/var/lib") / instance(service["StateDirectory"][-1])
    writable = [Path(instance(p).lstrip("-")) for v in service["ReadWritePaths"]
                for p in v.split()]
    for w in cfg.watches:
        assert any(w.path.is_relative_to(p) for p in writable), (w.path, writable)
    assert cfg.api.api_key_file == Path("/run/credentials", unit_name, credential_id)


@pytest.mark.parametrize("target", [PLAIN, f"sttwatch@{INSTANCE}.service"])
def test_systemd_analyze_verify_accepts_the_unit(analyze: str, installed: Path,
                                                 target: str) -> None:
    result = run(analyze, "verify", str(installed / target))
    about_us = [line for line in result.stderr.splitlines() if "sttwatch" in line]
    assert result.returncode == 0 and not about_us, result.stderr


def test_systemd_analyze_verify_reports_mistakes(analyze: str, installed: Path,
                                                 tmp_path: Path) -> None:
    """The verify test above can fail: a bad value and an unknown key are reported."""
    text = (installed / PLAIN).read_text(encoding="utf-8")
    bad = tmp_path / PLAIN
    bad.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=sometimes")
                   .replace("[Service]\n", "[Service]\nWatchDogSec=30s\n", 1), encoding="utf-8")
    result = run(analyze, "verify", str(bad))
    assert "sometimes" in result.stderr and "WatchDogSec" in result.stderr, result.stderr


@pytest.mark.parametrize("target", [PLAIN, f"sttwatch@{INSTANCE}.service"])
def test_security_exposure_is_low(analyze: str, installed: Path, target: str) -> None:
    version = re.match(r"systemd (\d+)", run(analyze, "--version").stdout)
    if version is None or int(version.group(1)) < 250:
        pytest.fail(f"systemd-analyze security --offline needs systemd 250 or newer; this is "
                    f"{version.group(0) if version else 'unknown'}", pytrace=False)
    result = run(analyze, "security", "--offline=yes", str(installed / target))
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found, f"no exposure level in the output:\n{result.stdout}\n{result.stderr}"
    exposure = float(found.group(1))
    open_items = [line.strip() for line in result.stdout.splitlines() if "✗" in line]
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}: " + "\n".join(
        open_items)
