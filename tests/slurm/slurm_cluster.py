"""A throwaway one-node Slurm cluster on localhost, started and stopped by a test.

munged, slurmctld and slurmd run in the foreground as children of the test, with every file they
use (key, socket, slurm.conf, state, spool, logs) under one private folder and free ports, so
tests in parallel (ctest -j) and a site's own Slurm never meet. Clients reach it through
SLURM_CONF (see `env`). Made for Debian 12's slurm-wlm 22.05 and munge 0.5.

    with SlurmCluster(root) as c:     # raises ClusterUnavailable(reason) if a daemon cannot run
        job = c.sbatch(["--wrap", "hostname"])
        c.wait_state(job, {"COMPLETED"}, 60)

`stop()` (also at exit and on SIGTERM/SIGINT/SIGHUP) cancels every job, kills what is left of
them (any process whose environment names this cluster's slurm.conf), then the daemons.
"""
import atexit
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# The daemons live in /usr/sbin, which a non-login shell's PATH may lack.
for _d in ("/usr/sbin", "/sbin"):
    if _d not in os.environ.get("PATH", "").split(":"):
        os.environ["PATH"] = os.environ.get("PATH", "") + ":" + _d

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "scancel", "squeue", "srun", "sinfo")


class ClusterUnavailable(Exception):
    """This machine cannot run the cluster; the message says why (the daemon's own words)."""


def missing_programs():
    return [p for p in DAEMONS + CLIENTS if shutil.which(p) is None]


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port(lo, hi, count=1):
    """The first of `count` consecutive TCP ports in [lo, hi) that nothing listens on now."""
    for _ in range(200):
        port = random.randrange(lo, hi - count + 1)
        if all(_bindable(p) for p in range(port, port + count)):
            return port
    raise RuntimeError(f"no {count} free consecutive TCP port(s) in [{lo}, {hi})")


def _tail(path, n=25):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"({path} was not written)"


class SlurmCluster:
    def __init__(self, root, first_job_id=None, cpus=None, cred_expire=5):
        self.root = Path(root)
        # At least 2, for tests of 2 tasks on a 1-core machine (config_overrides lets slurmd claim them).
        self.cpus = cpus or max(2, os.cpu_count() or 1)
        # A requeued job waits cred_expire + 1 s before it may start again (120 s by default).
        self.cred_expire = cred_expire
        self.first_job_id = first_job_id or random.randrange(1000, 60000)
        self.conf = self.root / "slurm.conf"
        self.procs = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        for k in list(self.env):  # a surrounding job's variables would confuse the clients
            if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF":
                del self.env[k]

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if os.geteuid() != 0:
            raise ClusterUnavailable(
                f"slurmd must run as root to start jobs as their user; this test runs as uid {os.geteuid()}")
        atexit.register(self.stop)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for d in ("munge", "run", "state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        self._start_munge()
        self._write_conf()
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld answers", lambda: self._run(["scontrol", "ping"]).returncode == 0
                   and "UP" in self._run(["scontrol", "ping"]).stdout, 30, ["slurmctld"])
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait("the node is idle", lambda: "idle" in self._run(
            ["sinfo", "-h", "-N", "-o", "%T"]).stdout, 30, ["slurmd", "slurmctld"])

    def _start_munge(self):
        m = self.root / "munge"
        key, sock = m / "munge.key", self.root / "run" / "munge.socket"
        r = subprocess.run(["mungekey", "--create", f"--keyfile={key}", "--bits=1024"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise ClusterUnavailable(f"mungekey failed: {r.stderr.strip()}")
        self.munge_socket = sock
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                               f"--log-file={m / 'munged.log'}", f"--pid-file={m / 'munged.pid'}",
                               f"--seed-file={m / 'munged.seed'}"])

        def works():
            enc = subprocess.run(["munge", "-n", "-S", str(sock)], capture_output=True)
            return enc.returncode == 0 and subprocess.run(
                ["unmunge", "-S", str(sock)], input=enc.stdout, capture_output=True).returncode == 0
        self._wait("munge encodes and decodes a credential", works, 15, ["munged"])

    def _write_conf(self):
        r = self.root
        # Above the 10000-29999 the batch script derives rendezvous ports from, below ephemeral ones.
        ctld_port = free_port(30000, 32700, count=2)
        slurmd_port = ctld_port + 1
        self.conf.write_text(f"""\
# Written by tests/slurm/slurm_cluster.py: a private one-node cluster on localhost.
ClusterName=agenttune-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire={self.cred_expire}
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run' / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# A requeued job becomes eligible again cred_expire + 1 s later; the scheduler's periodic pass
# (60 s by default) is what starts it then.
SchedulerParameters=sched_interval=1
MpiDefault=none
SlurmdParameters=config_overrides
JobRequeue=1
ReturnToService=2
FirstJobId={self.first_job_id}
KillWait=30
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name, argv):
        out = open(self.root / "log" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env)

    def _wait(self, what, ok, seconds, daemons):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for d in daemons:
                p = self.procs[d]
                if p.poll() is not None:
                    raise ClusterUnavailable(f"{d} exited with status {p.returncode} before {what}:\n"
                                             + self.daemon_output(d))
            if ok():
                return
            time.sleep(0.2)
        raise ClusterUnavailable(f"{what}: not within {seconds} s; "
                                 + "\n".join(f"{d} said:\n{self.daemon_output(d)}" for d in daemons))

    def daemon_output(self, name, n=25):
        text = _tail(self.root / "log" / f"{name}.out", n)
        if name == "munged":
            text += "\n" + _tail(self.root / "munge" / "munged.log", n)
        return text

    def _on_signal(self, signum, _frame):
        self.stop()
        raise SystemExit(128 + signum)

    def stop(self):
        if not self.procs:
            return
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self._run(["scancel", "--full", "--user", "root"])
            end = time.monotonic() + 40
            while time.monotonic() < end and self._run(["squeue", "-h"]).stdout.strip():
                time.sleep(0.5)
        self._kill_job_processes()
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}

    def _kill_job_processes(self):
        """SIGKILLs slurmstepd, batch shells, srun and ranks still running under this cluster."""
        mark = f"SLURM_CONF={self.conf}".encode()
        daemons = {p.pid for p in self.procs.values()}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) in daemons or int(d.name) == os.getpid():
                continue
            try:
                if mark in (d / "environ").read_bytes().split(b"\0"):
                    os.kill(int(d.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass

    # --- clients ----------------------------------------------------------------------------
    def _run(self, argv, **kw):
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, **kw)

    def run(self, argv, **kw):
        """A client command that must succeed; its output."""
        r = self._run(argv, **kw)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} exited {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def sbatch(self, args, env=None, cwd=None):
        r = subprocess.run(["sbatch", "--parsable", *map(str, args)], capture_output=True, text=True,
                           env={**self.env, **(env or {})}, cwd=cwd)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(map(str, args))} exited {r.returncode}: {r.stderr.strip()}")
        return int(r.stdout.strip().split(";")[0])

    def job(self, job_id):
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", str(job_id)])
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_state(self, job_id, states, seconds):
        end = time.monotonic() + seconds
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.monotonic() > end:
                raise TimeoutError(f"job {job_id} is {info.get('JobState')} after {seconds} s, "
                                   f"not one of {sorted(states)}: {info}")
            time.sleep(0.3)

    def logs(self):
        return "\n".join(f"--- {n} ---\n{self.daemon_output(n, 40)}" for n in ("slurmctld", "slurmd"))
