"""`fsx`: the command line.

Each command is a thin layer over the library: parse options, call one
function, print. User errors (`FsxError`) become one line on stderr and exit
status 1; Ctrl-C exits 130 quietly; nothing here prints a traceback unless
FSX_DEBUG=1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

from ..errors import FsxError
from ..formats.hub import DEFAULT_MODEL, aliases_help
from .launch import PARALLEL, enter_parallel, is_follower, launch

MAX_POSITIONS = 1 << 24  # --context and --max-tokens: far beyond any model's context


class FsxGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FsxError as e:
            raise click.ClickException(_as_rank(str(e))) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # a bug: say so plainly, keep the traceback for FSX_DEBUG
            lost = _peer_lost(e)
            if lost:
                raise click.ClickException(_as_rank(lost)) from None
            if os.environ.get("FSX_DEBUG"):
                traceback.print_exc()
            raise click.ClickException(
                f"internal error: {type(e).__name__}: {e} (FSX_DEBUG=1 shows the traceback)"
            ) from None


def _as_rank(message: str) -> str:
    """Under `fsx launch`, a rank > 0's error names the rank and reaches the terminal."""
    if "fs_mlx.distributed" not in sys.modules:  # not a distributed run
        return message
    from .. import distributed

    sys.stderr = distributed.error_stream()
    return distributed.rank_prefix() + message


def _peer_lost(e: Exception) -> str | None:
    if "fs_mlx.distributed" not in sys.modules:
        return None
    from ..distributed import explain

    return explain(e)


def _version_message() -> str:
    """`fsx --version`: also which BLAS MLX's CPU backend got (fs_mlx/openblas.py) and
    whether the CPU matrix products are fsx's own kernels or MLX's ops (fs_mlx/cpu)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import cpu
    from ..openblas import STATUS

    try:
        mlx = version("mlx")
    except PackageNotFoundError:
        mlx = "?"
    return f"%(prog)s %(version)s (mlx {mlx}; BLAS: {STATUS}; CPU kernels: {cpu.STATUS})"


@click.group(cls=FsxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fs-mlx", message=_version_message())
def main() -> None:
    """fs-mlx: a small, readable LLM inference engine on MLX."""


MODEL = click.argument("model")


def QUANTIZE(f):
    """`--quantize 4|8 --group-size N`: quantize float weights while loading.

    Reusable on any command that loads a model; turn the two values into
    load()'s argument with `quantize_spec`.
    """
    f = click.option("--group-size", type=click.Choice(["32", "64", "128"]),
                     help="weights per scale/bias pair with --quantize  [default: 64]")(f)
    f = click.option("--quantize", "quantize", type=click.Choice(["4", "8"]),
                     help="quantize the float weights to 4 or 8 bits while loading (MLX affine)")(f)
    return f


def quantize_spec(quantize: str | None, group_size: str | None) -> tuple[int, int] | None:
    """(bits, group_size) for load(quantize=...), or None."""
    if quantize is None:
        if group_size is not None:
            raise FsxError("--group-size only applies with --quantize 4|8")
        return None
    return int(quantize), int(group_size or 64)


KERNELS = click.option(
    "--kernels", type=click.Choice(["auto", "metal", "mlx", "mlx-ops", "msl", "reference"]), default="auto",
    show_default=True,
    help="which implementation runs the ops: hand-written Metal kernels (metal), MLX's own "
         "(mlx; on a CPU with fsx's CPU kernels where built, mlx-ops without them), "
         "the Metal kernels through the CPU executor (msl: slow, for tests and learning), "
         "or the plain formulas (reference: slowest, the oracle)",
)


# --- inspect ---------------------------------------------------------------

@main.command()
@MODEL
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def inspect(model: str, as_json: bool) -> None:
    """Describe MODEL without loading its weights: architecture, tensors, memory."""
    from .inspect import describe, format_report

    report = describe(model)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


# --- tokenize / detokenize ---------------------------------------------------

@main.command()
@MODEL
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="print the ids as a JSON list")
@click.option("--no-special", is_flag=True, help="do not add the tokenizer's special tokens (BOS)")
def tokenize(model: str, text: str, as_json: bool, no_special: bool) -> None:
    """Show how MODEL's tokenizer splits TEXT ('-' reads standard input)."""
    from ..loader import load_tokenizer

    text = read_stdin() if text == "-" else text
    tok = load_tokenizer(model)
    ids = tok.encode(text, add_special_tokens=not no_special)
    if as_json:
        click.echo(json.dumps(ids))
        return
    for i in ids:
        click.echo(f"{i:>8}  {tok.id_to_token(i)!r}")
    click.echo(f"{len(ids)} tokens")


@main.command()
@MODEL
@click.argument("ids")
def detokenize(model: str, ids: str) -> None:
    """Turn IDS (e.g. '1,2,3' or '[1, 2, 3]') back into text."""
    from ..loader import load_tokenizer

    tok = load_tokenizer(model)
    click.echo(tok.decode(parse_ids(ids, tok.vocab_size)))


def read_stdin() -> str:
    """Standard input as text: UTF-8, or one clear error (never a guess)."""
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FsxError(f"standard input is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                       f"{e.start}); convert it first, e.g. iconv -t UTF-8") from None


def check_out(out: str | None, option: str = "--out") -> None:
    """An output path given but empty fails now, not after a long load."""
    if out is not None and not out.strip():
        raise FsxError(f"{option} needs a file name, got {out!r}")


def parse_ids(text: str, vocab_size: int) -> list[int]:
    try:
        ids = [int(t) for t in text.replace("[", " ").replace("]", " ").replace(",", " ").split()]
    except ValueError:
        raise FsxError(f"token ids must be integers separated by commas: {text!r}") from None
    if not ids:
        raise FsxError("no token ids given")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise FsxError(f"token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})")
    return ids


# --- logits -------------------------------------------------------------------

@main.command()
@MODEL
@click.option("--text", help="text to run (no chat template; BOS only if the tokenizer adds one)")
@click.option("--ids", help="token ids to run, e.g. 1,2,3")
@click.option("--top", type=click.IntRange(min=1, max=MAX_POSITIONS), default=10, show_default=True,
              help="print the top K next tokens after the last position")
@click.option("--out", type=click.Path(dir_okay=False), help="save float32 logits [tokens, vocab] as .npy")
@QUANTIZE
@KERNELS
@PARALLEL
def logits(model: str, text: str | None, ids: str | None, top: int, out: str | None, kernels: str,
           quantize: str | None, group_size: str | None, parallel: str | None) -> None:
    """Run MODEL once over a prompt and show the next-token distribution."""
    from ..generation.forward import logits_for, top_k_report
    from ..loader import load

    if (text is None) == (ids is None):
        raise FsxError("give exactly one of --text or --ids")
    check_out(out)
    parallel = enter_parallel(parallel)
    lm = load(model, kernels=kernels, quantize=quantize_spec(quantize, group_size), parallel=parallel)
    tokens = lm.tokenizer.encode(text) if text is not None else parse_ids(ids, lm.config.vocab_size)
    if not tokens:
        raise FsxError("the text tokenizes to no tokens")
    values = logits_for(lm, tokens)  # np.float32 [T, vocab]
    if out and not is_follower():
        import numpy as np

        from ..files import write_atomic

        write_atomic(out, lambda f: np.save(f, values))
        click.echo(f"wrote {out}: float32 {list(values.shape)}", err=True)
    click.echo(top_k_report(lm.tokenizer, tokens, values[-1], top))


# --- quantize -------------------------------------------------------------------

@main.command()
@MODEL
@click.option("--bits", type=click.Choice(["4", "8"]), default="4", show_default=True)
@click.option("--group-size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True,
              help="weights per scale/bias pair: smaller is more accurate and larger")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="new directory for the quantized checkpoint (must not exist)")
def quantize(model: str, bits: str, group_size: str, out: str) -> None:
    """Write MODEL's weights quantized (MLX affine format; loads in fsx and mlx-lm)."""
    from ..formats.quantize import write_quantized
    from ..loader import resolve_model_dir

    r = write_quantized(resolve_model_dir(model), out, int(bits), int(group_size),
                        progress=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {r['path']}: {r['layers_quantized']} layers at {r['bits']} bits, "
               f"group {r['group_size']}; {r['bytes_before'] / 1e6:.1f} MB -> {r['bytes'] / 1e6:.1f} MB")


# --- generation: shared options ----------------------------------------------

def sampling_options(f):
    """--temp, --top-k, ... for run and generate. Unset options take the
    checkpoint's generation_config.json defaults, else greedy."""
    opts = [
        click.option("--temp", "temperature", type=float, help="temperature; 0 = greedy"),
        click.option("--top-k", type=int, help="keep the K most likely tokens (0 = off)"),
        click.option("--top-p", type=float, help="keep the smallest set with probability >= P"),
        click.option("--min-p", type=float, help="drop tokens below P x the top probability"),
        click.option("--repetition-penalty", type=float, help="> 1 discourages repeats (1 = off)"),
        click.option("--presence-penalty", type=float, help="subtracted from seen tokens (0 = off)"),
        click.option("--seed", type=int, help="random seed, for reproducible sampling"),
        click.option("--stop", multiple=True, help="stop when this text appears (repeatable)"),
        click.option("--system", help="system prompt"),
        click.option("--no-think", is_flag=True, help="Qwen3: answer without thinking first"),
        click.option("--hide-think", is_flag=True, help="do not print the thinking text"),
        click.option("--context", type=click.IntRange(min=16, max=MAX_POSITIONS),
                     help="context window in tokens (default: the model's, at most 32768)"),
        KERNELS,
        PARALLEL,
    ]
    for o in reversed(opts):
        f = o(f)
    return QUANTIZE(f)


SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                 "presence_penalty", "seed")


def prepare(model: str, kernels: str, kw: dict, quiet: bool = False):
    """Load the model and settle the sampling parameters (user > checkpoint > greedy)."""
    import time

    from ..generation.sample import checkpoint_defaults, resolve_params
    from ..loader import load, make_backend

    user = {k: kw.get(k) for k in SAMPLING_KEYS}
    resolve_params(user, {})  # reject bad options before a long load
    backend = make_backend(kernels)  # a bad --kernels fails before the load
    parallel = enter_parallel(kw.get("parallel"))
    if not quiet:
        click.echo(f"loading {model or f'{DEFAULT_MODEL} (the default model)'} ...", err=True)
    t = time.perf_counter()
    lm = load(model, kernels=backend, quantize=quantize_spec(kw.get("quantize"), kw.get("group_size")),
              parallel=parallel)
    if parallel and user["seed"] is None:  # every rank must draw the same random numbers
        from ..distributed import join, shared_seed

        user["seed"] = shared_seed(join())
    params, described = resolve_params(user, checkpoint_defaults(lm.path if lm.path.is_dir() else None))
    context = min(kw.get("context") or 32768, lm.config.max_position_embeddings)
    if kw.get("context") and kw["context"] > context and not quiet:
        click.echo(f"--context {kw['context']} is beyond the model's max_position_embeddings; "
                   f"using {context}", err=True)
    if not quiet:
        click.echo(f"loaded in {time.perf_counter() - t:.1f} s | sampling: {described} | "
                   f"context {context} | kernels {lm.kernels}", err=True)
    return lm, params, context


# --- generate -------------------------------------------------------------------

@main.command()
@MODEL
@click.option("--prompt", "-p", required=True, help="the prompt; '-' reads standard input")
@click.option("--raw", is_flag=True, help="no chat template: the prompt is the model's input as is")
@click.option("--max-tokens", "-n", type=click.IntRange(min=1, max=MAX_POSITIONS), default=256,
              show_default=True)
@click.option("--ignore-eos", is_flag=True, help="keep going past end-of-sequence tokens")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object: text, tokens, prompt_tokens, finish_reason, stats")
@sampling_options
def generate(model: str, prompt: str, raw: bool, max_tokens: int, ignore_eos: bool,
             as_json: bool, kernels: str, **kw) -> None:
    """Generate one reply to PROMPT and exit (scriptable: text to stdout, stats to stderr)."""
    from ..generation.chat import Conversation
    from ..generation.generate import stream_generate

    if prompt == "-":
        prompt = read_stdin()
    lm, params, context = prepare(model, kernels, kw, quiet=as_json)
    if raw:
        ids = lm.tokenizer.encode(prompt)
    else:
        conv = Conversation(lm.tokenizer, system=kw.get("system"), think=not kw.get("no_think"))
        conv.turns.append({"role": "user", "content": prompt})
        ids = conv.prompt_tokens()

    from .repl import ThinkingPrinter

    printer = ThinkingPrinter(sys.stdout, hide=kw.get("hide_think", False), color=sys.stdout.isatty())
    text, tokens = [], []
    for r in stream_generate(lm, ids, params, max_tokens=max_tokens, stop=tuple(kw.get("stop") or ()),
                             ignore_eos=ignore_eos, context=context):
        text.append(r.text)
        if r.token is not None:
            tokens.append(r.token)
        if not as_json:
            printer.write(r.text)
        final = r
    if as_json:
        click.echo(json.dumps({
            "text": "".join(text), "tokens": tokens, "prompt_tokens": len(ids),
            "finish_reason": final.finish_reason, "stats": final.stats.as_dict(),
        }, ensure_ascii=False))
    else:
        printer.end()
        click.echo()
        click.echo(f"[{final.stats.line()} | finish: {final.finish_reason}]", err=True)
    if final.finish_reason == "interrupted":  # Ctrl-C: the partial reply is out; say so to scripts
        sys.exit(130)


# --- run --------------------------------------------------------------------------

@main.command(help=f"""Chat with MODEL in the terminal.

MODEL is a Hugging Face directory, a .gguf file, a Hugging Face repo id
(owner/name, downloaded once) or an alias; without one, {DEFAULT_MODEL}.
Aliases: {aliases_help()}.""")
@click.argument("model", required=False)
@click.option("--max-tokens", "-n", type=click.IntRange(min=1, max=MAX_POSITIONS), default=512,
              show_default=True,
              help="longest reply")
@sampling_options
def run(model: str | None, max_tokens: int, kernels: str, **kw) -> None:
    from .repl import ChatOptions, ChatSession, chat_loop

    lm, params, context = prepare(model, kernels, kw)
    opts = ChatOptions(params=params, max_tokens=max_tokens, context=context,
                       hide_think=kw.get("hide_think", False), stop=tuple(kw.get("stop") or ()))
    chat_loop(ChatSession(lm, opts, system=kw.get("system"), think=not kw.get("no_think")))


# --- serve --------------------------------------------------------------------------

@main.command(help=f"""Serve MODEL over HTTP with OpenAI's API, batching concurrent requests.

POST /v1/chat/completions and /v1/completions (streamed or not), GET /v1/models,
GET /health, and a chat page at /. MODEL as for `fsx run`; without one,
{DEFAULT_MODEL}. Unset sampling fields take the checkpoint's
generation_config.json defaults, else greedy.""")
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="sequences decoded together; more requests wait in the queue")
@click.option("--max-queue", type=click.IntRange(min=0), default=64, show_default=True,
              help="requests waiting beyond --max-batch; more get 429 with Retry-After")
@click.option("--max-tokens", type=click.IntRange(min=1), default=2048, show_default=True,
              help="reply length when a request gives no max_tokens")
@click.option("--context", type=click.IntRange(min=16), help="context window per request in tokens "
              "(default: the model's)")
@click.option("--prefill-chunk", type=click.IntRange(min=1), default=512, show_default=True,
              help="prompt tokens per prefill step (running streams wait at most one chunk)")
@click.option("--prefix-cache-mb", type=click.IntRange(min=0), default=512, show_default=True,
              help="memory for KV reused across requests with a common prefix (0 = off)")
@click.option("--model-id", help="the model's name in the API (default: MODEL as given)")
@QUANTIZE
@KERNELS
def serve(model: str | None, host: str, port: int, kernels: str, quantize: str | None,
          group_size: str | None, model_id: str | None, **kw) -> None:
    try:
        from .serve import serve as run_server
    except ImportError as e:
        raise FsxError(f"fsx serve needs the serve extra: pip install 'fs-mlx[serve]' ({e})") from None
    import time

    from ..generation.sample import checkpoint_defaults
    from ..loader import load, make_backend

    backend = make_backend(kernels)
    click.echo(f"loading {model or f'{DEFAULT_MODEL} (the default model)'} ...", err=True)
    t = time.perf_counter()
    lm = load(model, kernels=backend, quantize=quantize_spec(quantize, group_size))
    click.echo(f"loaded in {time.perf_counter() - t:.1f} s | kernels {lm.kernels} | "
               f"http://{host}:{port}/", err=True)
    run_server(lm, model_id or model or DEFAULT_MODEL, host, port, max_batch=kw["max_batch"],
               max_queue=kw["max_queue"], context=kw["context"], default_max_tokens=kw["max_tokens"],
               prefill_chunk=kw["prefill_chunk"], prefix_cache_mb=kw["prefix_cache_mb"],
               sampling_defaults=checkpoint_defaults(lm.path if lm.path.is_dir() else None))


# --- bench ------------------------------------------------------------------------

@main.command()
@click.argument("model", required=False)
@click.option("--prompt-tokens", "-p", type=int, default=128, show_default=True,
              help="random prompt ids prefilled before decoding")
@click.option("--gen-tokens", "-g", type=int, default=64, show_default=True,
              help="tokens decoded per run (EOS ignored)")
@click.option("--repeat", "-r", type=int, default=3, show_default=True,
              help="measured runs per engine, after one warm-up (min/median/max reported)")
@click.option("--no-warmup", is_flag=True, help="measure the first run too")
@click.option("--contexts", help="sweep: prefill to each depth (e.g. 512,2048,8192) and decode "
              "--gen-tokens there, the cache reused from one depth to the next")
@click.option("--compare", multiple=True, help="also run mlx-lm (its own dtype), mlx-lm:float32 "
              "or llama.cpp (llama-bench, a .gguf MODEL) on the same checkpoint, alternating "
              "with fsx (repeatable)")
@click.option("--kernels", default="auto", show_default=True,
              help="auto, metal, mlx, mlx-ops or msl; comma-separated to compare them (metal,mlx; "
                   "mlx,mlx-ops: fsx's CPU kernels against MLX's ops)")
@click.option("--bandwidth", type=float, help="memory bandwidth in GB/s for the roofline "
              "(default: Apple chips from a table, else unknown)")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True,
              help="seed of the random prompt")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              help="fsx's compute dtype (default: float32 on CPU, the checkpoint's on a GPU)")
@QUANTIZE
@PARALLEL
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the table")
@click.option("--out", type=click.Path(dir_okay=False), help="also save the JSON report to this file")
def bench(model: str | None, contexts: str | None, compare: tuple[str, ...], kernels: str,
          no_warmup: bool, quantize: str | None, group_size: str | None, as_json: bool,
          out: str | None, bandwidth: float | None, **kw) -> None:
    """Measure prompt and decode speed, TTFT and memory of MODEL (default: the default model)."""
    from .bench import Settings, format_report, parse_int_list, run_bench, write_json

    check_out(out)
    kw["parallel"] = enter_parallel(kw.get("parallel"))
    s = Settings(model=model, contexts=parse_int_list(contexts, "--contexts") if contexts else [],
                 compare=list(compare), kernels=parse_kernels(kernels), warmup=not no_warmup,
                 bandwidth_gbs=bandwidth, quantize=quantize_spec(quantize, group_size), **kw)
    report = run_bench(s, progress=lambda m: click.echo(m, err=True))
    if out and not is_follower():
        write_json(out, report)
        click.echo(f"wrote {out}", err=True)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def parse_kernels(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()] or ["auto"]


# --- msl-demo ------------------------------------------------------------------

@main.command("msl-demo", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def msl_demo(args: tuple[str, ...]) -> None:
    """Run a Metal kernel on this CPU through the MSL executor and print what every
    thread computed (options: --dim, --threadgroup, --order, --show-source, --bench;
    see `fsx msl-demo --help`)."""
    from ..msl.__main__ import main as demo

    try:
        demo(list(args))
    except SystemExit as e:  # argparse's --help / usage errors
        if e.code:
            raise FsxError("see `fsx msl-demo --help` for the options") from None



# --- doctor ------------------------------------------------------------------

@main.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the report")
@click.option("--no-bench", is_flag=True, help="skip the short benchmark against mlx-lm (run on a Mac only)")
@click.option("--model", default=None, help="the benchmark's model (default: the default model)")
def doctor(as_json: bool, no_bench: bool, model: str | None) -> None:
    """Check the hand-written kernels on this machine and print a report for a bug report.

    On a Mac: builds every kernel with Metal, checks each against the plain-math
    reference on a few shapes (small ones included), times each against MLX's op
    and runs a short `fsx bench --compare mlx-lm`. Elsewhere: the same checks
    through the MSL executor (it says so). Exit status 1 if a check fails."""
    from .doctor import as_json as report_json, doctor as run_doctor, format_report

    report = run_doctor(bench=not no_bench, model=model)
    click.echo(json.dumps(report_json(report), indent=1) if as_json else format_report(report))
    if not report.ok:
        sys.exit(1)


main.add_command(launch)


if __name__ == "__main__":
    main()
