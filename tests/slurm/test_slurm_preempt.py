#!/usr/bin/env python3
"""scripts/launch/slurm_multinode.sbatch under a real Slurm (slurmctld + slurmd on localhost).

1. An uninterrupted run: the project's batch script, 2 tasks on CPU (Gloo), trains to the end.
2. The same run preempted mid-run the way Slurm warns before a time limit (--signal=B:TERM@N,
   i.e. SIGTERM to the batch shell only, sent here with `scancel --batch --signal=TERM`): the
   ranks checkpoint and exit 143, the script requeues the job, Slurm starts it again, and
   `--resume auto` continues from the checkpoint to the end. Then, after it has trained further,
   preempted again by `scontrol requeue` (the admin's or the scheduler's requeue: SIGTERM to every
   process of the job). Its losses must equal the uninterrupted run's, bit for bit (CPU).

Exit 0 = passed, 1 = failed, 77 = skipped (the reason is printed: a program is missing or a
daemon cannot run here, in its own words).

    tests/slurm/test_slurm_preempt.py --bin build/agenttune [--script scripts/launch/slurm_multinode.sbatch] [--keep]
"""
import argparse
import json
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import ClusterUnavailable, SlurmCluster, free_port, missing_programs  # noqa: E402

SKIP = 77
STEPS = 60            # long enough to be preempted twice mid-run on a busy 2-core machine
VOCAB = 512


def synthetic_source(folder, docs, base, stride, seed, min_len=20, max_len=300):
    """A prepared corpus (docs/formats.md: shard .bin/.idx + manifest.json), no tokenizer needed.
    Document d counts through 32 ids from base in steps of `stride` from a random start, ending in
    2 (EOS): a bigram a tiny model learns within a few steps, so a falling loss means training."""
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    ids, offsets = [], [0]
    for _ in range(docs):
        start = rng.randrange(32)
        ids += [base + (start + stride * i) % 32 for i in range(rng.randint(min_len, max_len) - 1)] + [2]
        offsets.append(len(ids))
    (folder / "shard_00000.bin").write_bytes(struct.pack(f"<{len(ids)}H", *ids))
    (folder / "shard_00000.idx").write_bytes(struct.pack(f"<{len(offsets)}Q", *offsets))
    (folder / "manifest.json").write_text(json.dumps({
        "format_version": 1, "tokenizer_sha256": "", "vocab_size": VOCAB, "dtype": "uint16",
        "documents": docs, "tokens": len(ids), "sources": [],
        "shards": [{"name": "shard_00000", "documents": docs, "tokens": len(ids), "max_token_id": max(ids)}]}))


def write_run(root):
    synthetic_source(root / "code", 200, 100, 1, 1)
    synthetic_source(root / "text", 40, 200, 3, 2)
    cfg = root / "train.yaml"
    # Steps big enough (~0.1 s) to signal between them; no periodic checkpoint before the end, so
    # the checkpoints a resume finds are the ones the preemptions wrote.
    cfg.write_text(f"""\
output_dir: run
model:
  shape: {{vocab_size: {VOCAB}, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
          num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256}}
data:
  sources:
    - {{name: code, path: code, weight: 10}}
    - {{name: text, path: text, weight: 1}}
  seq_len: 64
train:
  max_steps: {STEPS}
  micro_batch_size: 2
  global_batch_sequences: 8
  lr: 1.0e-2
  warmup_steps: 1
  threads: 1
checkpoint: {{interval: 1000, keep_last: 3}}
metrics: {{tensorboard: false}}
dist: {{backend: gloo}}
""")
    return cfg


def metrics(run):
    """[(step, loss)] in the order metrics.jsonl has them (a resumed run appends)."""
    f = run / "metrics.jsonl"
    if not f.exists():
        return []
    return [(j["step"], j["loss"]) for j in map(json.loads, f.read_text().splitlines()) if "loss" in j]


def wait_for(what, ok, seconds, cluster, job):
    end = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {seconds} s; job {job}: {cluster.job(job)}")
        time.sleep(0.1)


class Failed(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parents[2]
    ap.add_argument("--bin", required=True, help="the agenttune binary")
    ap.add_argument("--script", default=str(here / "scripts/launch/slurm_multinode.sbatch"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (kept anyway on failure)")
    a = ap.parse_args()
    bin_, script = Path(a.bin).resolve(), Path(a.script).resolve()
    check(bin_.is_file(), f"{bin_}: no agenttune binary")

    if missing := missing_programs():
        print(f"SKIP: Slurm/munge programs not installed: {', '.join(missing)} "
              "(Debian: apt-get install slurmd slurmctld slurm-client munge; scripts/setup.sh --with-slurm does)")
        return SKIP

    # Short path: munge's socket lives inside it (unix socket paths are limited to 108 bytes).
    root = Path(tempfile.mkdtemp(prefix="agenttune-slurm-"))
    # The script derives the rendezvous port as 10000 + job id % 20000: pick the first job id so
    # that the two jobs' ports are free now (parallel tests, other jobs).
    port = free_port(12000, 29000, count=2)
    cluster = SlurmCluster(root / "cluster", first_job_id=port - 10000 + 20000 * random.randrange(1, 3))
    t0 = time.monotonic()
    ok = False
    try:
        try:
            cluster.start()
        except ClusterUnavailable as e:
            print(f"SKIP: cannot run a Slurm cluster here: {e}")
            ok = True  # nothing worth keeping
            return SKIP
        print(f"cluster up in {time.monotonic() - t0:.1f} s ({cluster.conf})", flush=True)
        ok = run_tests(cluster, root, bin_, script)
        return 0 if ok else 1
    except (Failed, AssertionError, RuntimeError, TimeoutError) as e:
        traceback.print_exc()
        print(f"FAILED: {e}")
        for log in sorted((root / "logs").glob("*.out")):
            print(f"--- {log} ---\n{log.read_text(errors='replace')[-6000:]}")
        print(cluster.logs())
        return 1
    finally:
        cluster.stop()
        print(f"total {time.monotonic() - t0:.1f} s", flush=True)
        if ok and not a.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"scratch kept: {root}")


def submit(cluster, root, script, bin_, cfg, out):
    """The batch script as a user would submit it, told to use 2 CPU tasks on one node."""
    (root / "logs").mkdir(exist_ok=True)
    return cluster.sbatch(["--job-name", out.name, "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                           "--gpus-per-node=0", f"--output={root}/logs/%x-%j.out", script,
                           "--config", cfg, "--no-progress", "--set", f"output_dir={out}"],
                          env={"AGENTTUNE_BIN": str(bin_), "OMP_NUM_THREADS": "1"}, cwd=root)


def run_tests(cluster, root, bin_, script):
    cfg = write_run(root)

    # --- 1. uninterrupted ---------------------------------------------------------------------
    t = time.monotonic()
    full_dir = root / "full"
    job = submit(cluster, root, script, bin_, cfg, full_dir)
    info = cluster.wait_state(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}, 180)
    log = (root / "logs" / f"full-{job}.out").read_text(errors="replace")
    check(info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"uninterrupted job {job}: {info}\n{log}")
    port = 10000 + job % 20000
    # Rank 0 logs for both: it joined a 2-rank world from SLURM_* (not torchrun's variables),
    # at the first host of the node list and the port the script derived from the job id.
    check(f"rank 0 of 2 (local 0 of 2, slurm, master localhost:{port}) on cpu via gloo" in log
          and "on 2 rank(s)" in log, f"not a 2-rank Slurm world at localhost:{port} on Gloo:\n{log}")
    full = metrics(full_dir)
    check([s for s, _ in full] == list(range(1, STEPS + 1)), f"uninterrupted run logged steps {[s for s, _ in full]}")
    late = sum(loss for _, loss in full[-10:]) / 10
    check(late < full[0][1] / 2, f"the loss did not fall: step 1 {full[0][1]:.3f}, last 10 steps' mean {late:.3f}")
    print(f"uninterrupted job {job}: {STEPS} steps, loss {full[0][1]:.3f} at step 1, {late:.3f} over the last 10, "
          f"{time.monotonic() - t:.1f} s", flush=True)

    # --- 2. preempted twice -----------------------------------------------------------------
    t = time.monotonic()
    pre_dir = root / "preempted"
    job = submit(cluster, root, script, bin_, cfg, pre_dir)
    out = root / "logs" / f"preempted-{job}.out"
    # (a) The time-limit warning: SIGTERM to the batch shell only, as --signal=B:TERM@120 sends it.
    wait_for("step 8 of the first start", lambda: len(metrics(pre_dir)) >= 8, 120, cluster, job)
    cluster.run(["scancel", "--batch", "--signal=TERM", str(job)])
    wait_for("the script's requeue", lambda: cluster.job(job).get("Restarts") == "1", 120, cluster, job)
    first_stop = max(s for s, _ in metrics(pre_dir))
    check(first_stop < STEPS, f"the run reached step {STEPS} before the signal: nothing was preempted")
    # (b) The scheduler's requeue (preemption, admin): SIGTERM to every process of the job.
    wait_for("the resumed run to train 8 more steps",
             lambda: max(s for s, _ in metrics(pre_dir)) >= first_stop + 8, 120, cluster, job)
    cluster.run(["scontrol", "requeue", str(job)])
    wait_for("the requeue", lambda: cluster.job(job).get("Restarts") == "2", 60, cluster, job)
    second_stop = max(s for s, _ in metrics(pre_dir))
    check(second_stop < STEPS, f"the run reached step {STEPS} before `scontrol requeue`: nothing was preempted")
    info = cluster.wait_state(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}, 240)
    log = out.read_text(errors="replace")
    check(info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0" and info["Restarts"] == "2",
          f"preempted job {job}: {info}\n{log}")

    # What happened, from the job's own output (--open-mode=append keeps all three starts).
    check(log.count("agenttune: SIGTERM (time limit or preemption)") >= 2, f"the script's trap did not fire twice:\n{log}")
    check(f"requeueing job {job} to resume" in log, f"the script did not requeue the job itself:\n{log}")
    stops = [int(s) for s in re.findall(r"stop signal at step (\d+)", log)]
    resumes = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", log)]
    check(len(set(stops)) == 2 and sorted(set(stops)) == sorted(set(resumes)),
          f"expected two checkpoints on SIGTERM and two resumes from them; stopped at {stops}, resumed at {resumes}")
    check(log.count("--resume auto: no complete checkpoint") >= 1, "the first start did not start fresh")
    for s in set(stops):
        check((pre_dir / "checkpoints" / f"step_{s:08d}" / "COMPLETE").exists(), f"no complete checkpoint at step {s}")

    # Bit-identical to the uninterrupted run: every step once (a step logged twice must agree).
    got = {}
    for s, loss in metrics(pre_dir):
        check(got.setdefault(s, loss) == loss, f"step {s} logged with two losses: {got[s]} and {loss}")
    check(sorted(got) == list(range(1, STEPS + 1)), f"preempted run logged steps {sorted(got)}")
    diff = [(s, loss, got[s]) for s, loss in full if got[s] != loss]
    check(not diff, f"losses differ from the uninterrupted run at (step, full, preempted): {diff[:5]}")
    print(f"preempted job {job}: SIGTERM to the batch shell at step {sorted(set(stops))[0]}, "
          f"`scontrol requeue` at step {sorted(set(stops))[1]}, requeued twice, resumed, {STEPS} steps, "
          f"all {STEPS} losses bit-identical to the uninterrupted run; {time.monotonic() - t:.1f} s", flush=True)
    print("PASSED")
    return True


if __name__ == "__main__":
    sys.exit(main())
