"""The ranks of a distributed run: joining them, checking they agree, failing cleanly.

`fsx launch` (apps/launch.py, over `mlx.launch`) starts one process per rank
with the same command; MLX's own distributed backend connects them (ring over
TCP, MPI, or JACCL over Thunderbolt 5 RDMA). This module is what every rank
does on top of that:

    join()        mx.distributed.init under a deadline: a peer that never
                  connects is an error after FSX_DIST_TIMEOUT seconds, not a hang
    agree(...)    one all_gather of two hashes (fs-mlx + MLX version; the model,
                  its quantization, --parallel and --kernels): a rank that would
                  compute something else stops every rank at start
    shared_seed() rank 0's random seed for everyone: identical logits plus an
                  identical random stream make every rank sample the same token
    follow()      ranks other than 0 print nothing but their errors
    explain(e)    the backend's "peer lost" errors as one line
    watch_peers() MLX's ring backend can hang after losing a peer: a watcher
                  process reads this rank's stderr and ends the rank with one
                  line when the backend reports the loss and the rank is still
                  there a few seconds later

The model-level split (which rank holds which weights) is model/parallel.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from .errors import FsxError

DEFAULT_TIMEOUT_S = 120.0  # joining and the first exchange; generous: ranks may load at different speeds

# Environment variables a launcher sets for each rank (mlx.launch: MLX_RANK; mpirun: OMPI_*).
LAUNCHER_ENV = ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


@dataclass
class World:
    group: Any  # mx.distributed.Group
    rank: int
    size: int


_world: World | None = None
_error_stream = None  # a rank > 0's stderr, kept for its errors after follow()


def launched() -> bool:
    """Is this process one rank of a launched job?"""
    return any(v in os.environ for v in LAUNCHER_ENV)


def timeout_s() -> float:
    try:
        return float(os.environ.get("FSX_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise FsxError(f"FSX_DIST_TIMEOUT must be a number of seconds, not {os.environ['FSX_DIST_TIMEOUT']!r}") from None


# The watchdog: a separate process, because MLX's calls hold the GIL while they
# block, so no thread (and no Python signal handler) of ours would ever run.
_WATCHDOG = """
import os, signal, sys, time
parent, seconds, line = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
time.sleep(seconds)
try:
    os.kill(parent, 0)
except OSError:
    sys.exit(0)
sys.stderr.write(line + "\\n")
sys.stderr.flush()
os.kill(parent, signal.SIGKILL)
"""


# The peer watcher: this process's stderr (fd 2) goes through a pipe to it, and it
# passes every byte on. When MLX's ring backend has given up on a peer ("Failing
# pending tasks") the rank normally raises "connection to a peer was lost" at
# once (explain() words it); but if another collective was already queued on the
# stream, MLX waits for it forever while holding the GIL (seen with MLX 0.32: the
# main thread in synchronize(), the queued all_reduce waiting on a send that will
# never run). So after LOST_GRACE_S the watcher says it and kills the rank.
LOST_GRACE_S = 3.0
_PEER_WATCH = """
import os, select, signal, sys, time
parent, grace, line, quiet = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].encode(), sys.argv[4] == "1"
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the rank's to handle
tail, lost = b"", None
while True:
    wait = None if lost is None else max(0.0, lost + grace - time.monotonic())
    if select.select([0], [], [], wait)[0]:
        data = os.read(0, 65536)
        if not data:  # the rank has exited: its stderr is closed
            sys.exit(0)
        if not quiet:
            os.write(2, data)
        tail = (tail + data)[-256:]
        if lost is None and b"Failing pending tasks" in tail:
            lost = time.monotonic()
    else:
        try:
            os.kill(parent, 0)
        except OSError:
            sys.exit(0)
        os.write(2, line + b"\\n")
        os.kill(parent, signal.SIGKILL)
        sys.exit(0)
"""
_watcher: subprocess.Popen | None = None


def watch_peers(quiet: bool) -> None:
    """Start the peer watcher (see above): fd 2 becomes the pipe to it. quiet: it passes
    nothing on (a follower rank), but still watches and still says its one line."""
    global _watcher
    line = ("Error: lost the connection to another rank ([ring] a peer stopped answering); "
            "did a rank exit or crash?")
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    _watcher = subprocess.Popen(
        [sys.executable, "-I", "-c", _PEER_WATCH, str(os.getpid()), str(LOST_GRACE_S), line,
         "1" if quiet else "0"],
        stdin=read_end, stdout=subprocess.DEVNULL, stderr=2)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)


@contextmanager
def deadline(what: str, seconds: float | None = None):
    """Run the body, or end this process with one clear line if it takes longer.

    MLX's ring backend retries a connection forever and a collective waits for
    every rank, so a peer that never shows up would hang us.
    """
    seconds = timeout_s() if seconds is None else seconds
    rank = os.environ.get("MLX_RANK", "?")
    line = (f"Error: rank {rank}: {what} did not finish within {seconds:.0f} s: a peer is down, "
            "unreachable or not started (FSX_DIST_TIMEOUT sets the limit)")
    watchdog = subprocess.Popen([sys.executable, "-I", "-c", _WATCHDOG, str(os.getpid()), str(seconds), line],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=_error_fd())
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


def join() -> World:
    """This process's place among the ranks (once per process; size 1 when not launched)."""
    global _world
    if _world is None:
        with deadline("connecting to the other ranks"):
            try:
                group = mx.distributed.init(strict=launched())
            except RuntimeError as e:
                raise FsxError(f"cannot join the other ranks: {e}") from None
            mx.eval(mx.distributed.all_sum(mx.array(1), group=group))  # every link works
        _world = World(group, group.rank(), group.size())
    return _world


def fingerprint(text: str) -> list[int]:
    """Four int32s of text's SHA-256 (all_gather moves numbers, not strings)."""
    digest = hashlib.sha256(text.encode()).digest()[:16]
    return [int.from_bytes(digest[i:i + 4], "little", signed=True) for i in range(0, 16, 4)]


def agree(world: World, software: str, model: str) -> None:
    """Stop every rank at start unless all of them run the same software on the same model."""
    if world.size == 1:
        return
    mine = mx.array([fingerprint(software) + fingerprint(model)], dtype=mx.int32)  # [1, 8]
    with deadline("checking that every rank runs the same model"):
        every = mx.distributed.all_gather(mine, group=world.group).tolist()  # [N, 8]
    for r, row in enumerate(every):
        if row == every[0]:
            continue
        if world.rank > 0:  # every rank sees the same table; rank 0 says what is wrong
            raise SystemExit(1)
        if row[:4] != every[0][:4]:
            raise FsxError(f"rank {r} runs a different fs-mlx or MLX version than rank 0 "
                           f"({software}); install the same on every machine")
        raise FsxError(f"rank {r} loaded a different model, quantization, --parallel or "
                       "--kernels than rank 0; every rank must run the same command on the "
                       "same checkpoint")


def shared_seed(world: World) -> int:
    """A random seed chosen by rank 0, the same on every rank."""
    import random

    seed = random.randrange(2**31) if world.rank == 0 else 0
    if world.size == 1:
        return seed
    return int(mx.distributed.all_sum(mx.array(seed, dtype=mx.int32), group=world.group).item())


def follow(world: World) -> None:
    """Ranks other than 0 go quiet: rank 0 owns the terminal, the others follow.

    Their stdout and stderr (and MLX's own messages on the file descriptors)
    go to /dev/null, through the peer watcher for stderr; `error_stream()` is
    where their errors still go. Every rank of a job gets the watcher.
    """
    global _error_stream
    if _watcher is not None or world.size == 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if world.rank > 0:
        _error_stream = os.fdopen(os.dup(2), "w")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    watch_peers(quiet=world.rank > 0)


def error_stream():
    """Where this rank's error line goes (stderr, or the saved one after follow())."""
    return _error_stream or sys.stderr


def _error_fd() -> int:
    return _error_stream.fileno() if _error_stream is not None else 2


def rank_prefix() -> str:
    """'rank 1: ' for the errors of a rank > 0 of a launched job, '' otherwise."""
    return f"rank {_world.rank}: " if _world is not None and _world.rank > 0 else ""


def explain(e: BaseException) -> str | None:
    """One line for the backend's errors when a peer goes away; None for anything else."""
    text = str(e)
    if isinstance(e, RuntimeError) and ("[ring]" in text or "[mpi]" in text or "[jaccl]" in text):
        return f"lost the connection to another rank ({text.strip()}); did a rank exit or crash?"
    return None
