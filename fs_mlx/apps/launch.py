"""`fsx launch`: one fsx command on N ranks, over MLX's own launcher; and `--parallel`.

    fsx launch -n 2 -- generate MODEL -p "hi" --parallel pipeline
      -> mlx.launch -n 2 --backend ring --python <this python> -- -m fs_mlx generate ...
      -> rank 0 .. N-1 each run that command; MLX_RANK and a hostfile tell each who it is

Every rank loads its share of the model (loader.load(parallel=...)) and runs the
same generation; rank 0 prints, the others follow silently (distributed.py).
`mlx.launch` copies our standard input to every rank, so `fsx run` works: each
rank reads the same lines and keeps the same conversation.

`mlx.launch` (MLX 0.32) exits 0 even when a rank fails, after stopping the
others; it does say so on stderr ("Node with rank 1 exited with code 1"), so we
pass its stderr through and turn those lines into our exit status.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click

from ..errors import FsxError

BACKENDS = ("ring", "mpi", "jaccl")
SPLIT_COMMANDS = ("generate", "run", "bench", "logits")  # the commands that load with --parallel
PARALLEL_MODES = ("tensor", "pipeline")


def PARALLEL(f):
    """`--parallel tensor|pipeline` for the commands that load a model."""
    return click.option(
        "--parallel", type=click.Choice(PARALLEL_MODES),
        help="under `fsx launch`: split the model across the ranks by heads (tensor; the default "
             "when launched) or by layers (pipeline)")(f)


def parallel_mode(option: str | None) -> str | None:
    """--parallel, defaulting to tensor when this process is a rank of a launched job."""
    from ..distributed import launched

    return option or ("tensor" if launched() else None)


# A rank's failure as mlx.launch reports it (it colours the line: escapes stripped first).
_FAILED = re.compile(r"Node with rank (\d+) (exited with code (-?\d+)|was killed)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# What the ring backend prints, once per retry, when a peer has gone: our own line says it.
_RING_NOISE = re.compile(r"^\[ring\] (Socket \d+ was closed|(Sending to|Receiving from) socket \d+ failed"
                         r"|Too many send/recv errors)")


def launcher_command(ranks: int, hosts: str | None, hostfile: str | None, backend: str | None,
                     starting_port: int | None, python: str | None, args: tuple[str, ...]) -> list[str]:
    """The mlx.launch command line for `fsx launch` (options checked here, one line each)."""
    if not args:
        raise FsxError("fsx launch: give the fsx command to run after --, "
                       "e.g. fsx launch -n 2 -- generate MODEL -p hi")
    args = list(args)
    if args[0] == "fsx":
        args = args[1:]
    ctx = click.get_current_context(silent=True)  # the fsx group, when run as `fsx launch`
    commands = ctx.find_root().command.commands if ctx else {}
    if not args or (commands and args[0] not in commands):
        name = args[0] if args else ""
        raise FsxError(f"fsx launch: {name!r} is not an fsx command "
                       f"(one of: {', '.join(sorted(c for c in commands if c != 'launch'))})")
    if args[0] not in SPLIT_COMMANDS:
        raise FsxError(f"fsx launch runs {', '.join(SPLIT_COMMANDS)} on several ranks; "
                       f"`fsx {args[0]}` does not split a model across ranks")
    if ranks < 1:
        raise FsxError(f"fsx launch: -n must be at least 1, not {ranks}")
    if hosts and hostfile:
        raise FsxError("fsx launch: give --hosts or --hostfile, not both")
    if hostfile and ranks != 1:
        raise FsxError("fsx launch: -n repeats --hosts; with --hostfile every line is one rank")
    if hostfile and not Path(hostfile).is_file():
        raise FsxError(f"fsx launch: --hostfile {hostfile}: no such file")
    if backend is not None and backend not in BACKENDS:
        raise FsxError(f"fsx launch: --backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    exe = shutil.which("mlx.launch")
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from mlx._distributed_utils.launch "
                                                   "import main; sys.argv[0] = 'mlx.launch'; main()"]
    if backend is None and not hostfile:
        backend = "ring"  # a hostfile may name its own (JACCL's, from mlx.distributed_config)
    cmd += ["--backend", backend] if backend else []
    cmd += ["--python", python or sys.executable]
    cmd += ["--hostfile", hostfile] if hostfile else ["--hosts", hosts or "127.0.0.1", "-n", str(ranks)]
    if starting_port is not None:
        cmd += ["--starting-port", str(starting_port)]
    return cmd + ["--", "-m", "fs_mlx", *args]


def run_launcher(cmd: list[str]) -> int:
    """Run mlx.launch; pass its stderr through; our exit status says whether every rank succeeded."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace",
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    failures = []
    for line in proc.stderr:
        m = _FAILED.search(_ANSI.sub("", line))
        if _RING_NOISE.match(line):
            continue
        if m:
            failures.append((int(m.group(1)), m.group(3)))
            continue  # we say it once, below
        sys.stderr.write(line)
        sys.stderr.flush()
    status = proc.wait()
    if failures:
        rank, code = min(failures, key=lambda f: f[1] is None)  # prefer the rank that exited itself
        how = f"exited with status {code}" if code is not None else "was killed"
        others = "; the other ranks were stopped" if len(failures) > 1 else ""
        click.echo(f"fsx launch: rank {rank} {how}{others}", err=True)
        return 1
    return status


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-n", "ranks", type=int, default=1, show_default=True,
              help="ranks per host (with the default --hosts 127.0.0.1: N processes on this machine)")
@click.option("--hosts", help="comma-separated IPs, one rank per host (times -n); "
              "reached with ssh, except this machine")
@click.option("--hostfile", type=click.Path(dir_okay=False),
              help="mlx.launch's JSON hostfile: ssh names, IPs, backend, RDMA devices (docs/distributed.md)")
@click.option("--backend", type=click.Choice(BACKENDS),
              help="ring: TCP (Ethernet, Thunderbolt bridge); mpi: mpirun; jaccl: RDMA over Thunderbolt 5  "
                   "[default: the hostfile's, else ring]")
@click.option("--starting-port", type=int, help="ring: the first port (one per rank)  [default: mlx.launch's]")
@click.option("--python", help="the python that runs fs_mlx on every host  [default: this one]")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def launch(ranks: int, hosts: str | None, hostfile: str | None, backend: str | None,
           starting_port: int | None, python: str | None, command: tuple[str, ...]) -> None:
    """Run an fsx COMMAND on N ranks that share one model (after --: generate, run, bench, logits).

    Example: fsx launch -n 2 -- generate MODEL -p "hello" --parallel pipeline
    """
    cmd = launcher_command(ranks, hosts, hostfile, backend, starting_port, python, command)
    sys.exit(run_launcher(cmd))


def enter_parallel(option: str | None) -> str | None:
    """The --parallel mode; when there is one, join the ranks and let rank 0 own the terminal."""
    mode = parallel_mode(option)
    if mode:
        from ..distributed import follow, join

        follow(join())
    return mode


def is_follower() -> bool:
    """A rank > 0 of a distributed run (it writes no files: rank 0 does)."""
    if "fs_mlx.distributed" not in sys.modules:
        return False
    from .. import distributed

    return distributed.rank_prefix() != ""
