"""CI test of integrations/ray on a local Ray cluster (`ray.init(num_cpus=2)`).

A job of 4 shards runs on two restartable actors; one actor's worker stops after one record of
its shard and the actor is killed there (`ray.kill`, restarted by Ray); its shard is retried on
the restarted actor and resumes from the last complete record. The merged Parquet file must be
byte-identical to a one-process run of the same job, and pandas must read it.

Usage: python integrations/ray/tests/test_ray.py PATH/TO/explain
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, PACKAGE_DIR)
# Ray's workers inherit the environment of the local cluster that ray.init starts.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_DIR, os.environ.get("PYTHONPATH")]))

import pandas as pd  # noqa: E402
import ray  # noqa: E402
from ray.util import ActorPool  # noqa: E402

from explain_ray import ShardWorker, merge  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "One, two, three,",
    "The cat sat on the",
    "Water boils at a hundred",
    "The opposite of hot is",
    "Monday, Tuesday,",
    "Paris is the capital of",
    "Red, green and",
]
SHARDS = 4


class PausingOnce(ShardWorker):
    """A worker that, the first time only (a marker file), stops after one record of a shard."""

    def __init__(self, explain: str, job_args: list[str], marker: str):
        env = {}
        if not os.path.exists(marker):
            Path(marker).touch()
            env = {"EXPLAIN_PAUSE_AFTER": "1"}
        super().__init__(explain, job_args, env)


def job_args(input_path: Path, out: Path) -> list[str]:
    return [
        "--threads", "1", "--methods", "saliency", "--input", str(input_path),
        "--out", str(out), "--shards", str(SHARDS),
    ]


def main() -> None:
    explain = os.path.abspath(sys.argv[1])
    tmp = Path(tempfile.mkdtemp(prefix="explain-ray-"))
    input_path = tmp / "in.jsonl"
    input_path.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(PROMPTS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    one = tmp / "one"
    subprocess.run([explain, "attribute", *job_args(input_path, one)], check=True, env=env, stdout=subprocess.DEVNULL)
    reference = merge(explain, str(one))["sha256"]

    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = tmp / "ray"
    args = job_args(input_path, out)
    options = {"max_restarts": -1, "max_task_retries": 3, "num_cpus": 1}
    first = ray.remote(**options)(PausingOnce).remote(explain, args, str(tmp / "paused-once"))
    ray.get(first.pid.remote())  # constructed (and paused-once marker taken) before the second
    second = ray.remote(**options)(ShardWorker).remote(explain, args)
    # ActorPool hands the first shard to the last idle actor: shard 0 goes to `first`.
    pool = ActorPool([second, first])

    partial = out / "_partial" / f"part-00000-of-{SHARDS:05d}.jsonl"
    killed = threading.Event()

    def kill_when_paused() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if partial.exists() and partial.read_text().count("\n") >= 1:
                time.sleep(0.5)  # the worker is now asleep in its pause
                ray.kill(first, no_restart=False)
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_paused)
    killer.start()
    reports = list(pool.map_unordered(lambda actor, shard: actor.run.remote(shard), range(SHARDS)))
    killer.join()
    assert killed.is_set(), "the first actor never wrote a record of shard 0"
    by_shard = {r["shard"]: r for r in reports}
    assert sorted(by_shard) == list(range(SHARDS)), reports
    resumed = [r for r in reports if r["resumed_from"] > 0]
    assert len(resumed) == 1 and resumed[0]["resumed_from"] == 1, reports  # the killed shard
    assert all(r["status"] == "done" for r in reports), reports
    merged = merge(explain, str(out))
    assert merged["sha256"] == reference, (merged["sha256"], reference)
    assert merged["records"] == len(PROMPTS)

    # The results as other tools read them.
    frame = pd.read_parquet(out / "results.parquet")
    assert list(frame["id"]) == [f"p{i}" for i in range(len(PROMPTS))]
    assert all(len(s) == len(t) for s, t in zip(frame["saliency.scores"], frame["tokens"]))
    assert frame["error"].isna().all()
    ray.shutdown()
    print(f"ray: {len(reports)} shards on 2 actors, one killed mid-shard and resumed; merge identical ({reference[:12]}…)")


if __name__ == "__main__":
    main()
