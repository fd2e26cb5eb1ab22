"""``scripts/debian_packages.sh`` (run by ``scripts/setup.sh``) on a machine where another package manager
holds apt's locks, as unattended-upgrades does after a fresh boot: it waits, boundedly, and says why.

``apt-get``, ``dpkg`` and ``sudo`` are stand-ins on PATH that answer as the real ones do when locked."""

import os
import subprocess
import time

from tests.helpers import ROOT

LISTS_LOCKED = "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)"
DPKG_LOCKED = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)"


def stand_ins(tmp_path, update_locked_for: int, install_locked: bool):
    """A bin folder whose apt-get fails ``update`` the first ``update_locked_for`` times, and ``install``
    always when ``install_locked``; every call is logged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    scripts = {
        "dpkg": "exit 1\n",  # no package installed
        "sudo": 'exec "$@"\n',
        "apt-get": f"""echo "$*" >> {log}
case " $* " in
  *" update "*) n=$(grep -c " update " {log}); [ "$n" -le {update_locked_for} ] && {{ echo "{LISTS_LOCKED}" >&2; exit 100; }} ;;
  *" install "*) {"echo '" + DPKG_LOCKED + "' >&2; exit 100" if install_locked else "true"} ;;
esac
exit 0
""",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "APT_LOCK_WAIT": "6"}
    return env, log


def run_script(env):
    began = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "debian_packages.sh")], capture_output=True, text=True,
                          env=env, timeout=60)
    return proc, time.monotonic() - began


def test_a_held_lists_lock_is_waited_for_and_the_install_goes_ahead(tmp_path):
    env, log = stand_ins(tmp_path, update_locked_for=2, install_locked=False)
    proc, _ = run_script(env)
    assert proc.returncode == 0, proc.stderr
    assert "waiting up to 6s if another apt holds the lock" in proc.stdout
    calls = log.read_text().splitlines()
    assert [c.split()[-2:] for c in calls if " update " in f" {c} "] == [["update", "-qq"]] * 3  # two locked, then through
    assert any(" install " in f" {c} " for c in calls)
    assert all("DPkg::Lock::Timeout=6" in c for c in calls)  # apt-get itself waits for the dpkg lock


def test_a_lock_that_stays_held_ends_in_a_message_after_the_wait(tmp_path):
    env, log = stand_ins(tmp_path, update_locked_for=0, install_locked=True)
    proc, elapsed = run_script(env)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("setup: apt is still locked after 6s")
    assert DPKG_LOCKED in proc.stderr
    assert 6 <= elapsed < 30
    assert sum(" install " in f" {c} " for c in log.read_text().splitlines()) >= 2  # retried, not given up at once
