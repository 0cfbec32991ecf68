"""Run `explain` dataset jobs on Ray.

Each Ray actor starts one long-lived ``explain serve --stdio`` worker (the model is loaded
once per actor) and sends it shard ids; the Rust worker writes the parts under the shard
contract of docs/scale-out.md. A finished shard is skipped and a torn one resumes from its
last complete record, so Ray's retries are harmless: actors restart after a crash
(``max_restarts``) and their in-flight shard is retried (``max_task_retries``).

The worker subprocess is tied to its actor: it receives SIGKILL when the actor's process dies
(Linux ``PR_SET_PDEATHSIG``), so a killed actor never leaves a worker writing the shard that its
replacement resumes.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
from typing import Any, Iterable, Sequence

import ray
from ray.util import ActorPool

__all__ = ["ShardWorker", "run_shards", "merge"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ShardWorker:
    """One ``explain serve --stdio`` process; ``run(shard)`` runs one shard of its job."""

    def __init__(self, explain: str, job_args: Sequence[str], env: dict[str, str] | None = None):
        self.command = [explain, "serve", "--stdio", *job_args]
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent,
        )

    def pid(self) -> int:
        """Process id of the ``explain`` worker."""
        return self.proc.pid

    def run(self, shard: int) -> dict[str, Any]:
        """Runs shard ``shard``; returns the worker's report (status, records, resumed_from)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"shard": shard}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"explain serve exited with code {code} during shard {shard}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"shard {shard}: {answer['error']}")
        return answer


def run_shards(
    explain: str,
    job_args: Sequence[str],
    shards: Iterable[int],
    num_actors: int = 2,
    max_task_retries: int = 3,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Runs ``shards`` of the job ``job_args`` (``--input``, ``--out``, ``--shards N``, methods,
    …) on ``num_actors`` restartable actors; returns the shard reports in completion order."""
    actor_class = ray.remote(max_restarts=-1, max_task_retries=max_task_retries)(ShardWorker)
    actors = [actor_class.remote(explain, list(job_args), env) for _ in range(num_actors)]
    pool = ActorPool(actors)
    return list(pool.map_unordered(lambda actor, shard: actor.run.remote(shard), list(shards)))


def merge(explain: str, out: str) -> dict[str, Any]:
    """``explain merge OUT --json``: checks every shard and returns the merge report."""
    done = subprocess.run(
        [explain, "merge", out, "--json"], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"explain merge failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)
