"""`fsx run` in a real pseudo-terminal: what a person at a keyboard sees."""

import re
import sys
import time

import pexpect

STATS = r"\[prompt (\d+) tok at [\d.]+ tok/s(?: \(\+(\d+) cached\))?"


def spawn(model, *args):
    child = pexpect.spawn(sys.executable, ["-m", "fs_mlx.apps.cli", "run", str(model), *args],
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.logfile_read = log = LogBuffer()
    child.expect_exact(">>> ")
    return child, log


class LogBuffer:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def turn(child, message):
    """Send a message; return (computed prompt tokens, cached prompt tokens) from the stats line."""
    child.sendline(message)
    child.expect(STATS)
    computed, cached = int(child.match.group(1)), int(child.match.group(2) or 0)
    child.expect_exact(">>> ")
    return computed, cached


def test_two_turns_reset_interrupt_exit(tiny_dir):
    child, log = spawn(tiny_dir, "--max-tokens", "12")
    first, cached = turn(child, "hello world")
    assert cached == 0
    # The second turn builds on the first: its prompt starts with the whole first
    # exchange, which the KV cache already holds.
    second, cached = turn(child, "and again")
    assert cached >= first and second > 0

    child.sendline("/reset")
    child.expect_exact("[conversation reset]")
    child.expect_exact(">>> ")
    computed, cached = turn(child, "hello world")
    assert computed + cached == first  # the same prompt as a fresh first turn

    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in log.text


def test_ctrl_c_stops_the_reply_and_keeps_the_chat(tiny_dir):
    child, log = spawn(tiny_dir, "--max-tokens", "3000")  # seconds of decoding
    child.sendline("tell me everything")
    child.expect_exact("tell me everything\r\n")  # the terminal's echo
    child.expect(r"\S", timeout=30)  # the reply has started
    time.sleep(0.5)
    child.sendintr()
    child.expect_exact("[interrupted]")
    child.expect_exact(">>> ")
    child.sendline("/stats")
    child.expect(r"\[context: (\d+) of \d+ tokens")
    assert 0 < int(child.match.group(1)) < 3000  # the partial reply, not a full one
    child.expect_exact(">>> ")
    child.sendintr()  # Ctrl-C at the prompt explains how to leave
    child.expect_exact("use /exit or Ctrl-D")
    child.sendeof()  # Ctrl-D leaves
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in log.text and "KeyboardInterrupt" not in log.text


def test_overflowing_context_drops_old_turns_with_a_warning(tiny_dir):
    child, log = spawn(tiny_dir, "--max-tokens", "8", "--context", "64")
    for _ in range(4):
        child.sendline("the quick brown fox jumps over the lazy dog")
        i = child.expect([re.escape("[context full: dropped the"), STATS])
        if i == 0:
            break
        child.expect_exact(">>> ")
    else:
        raise AssertionError("no warning although the context overflowed:\n" + log.text)
    child.expect(STATS)  # and the reply still comes
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    assert "Traceback" not in log.text


def test_default_model_answers_paris():
    """`fsx run` with no MODEL: SmolLM2-135M-Instruct (fetched once from PyPI, cached),
    greedy, as a user on a fresh machine would first meet it."""
    child = pexpect.spawn(sys.executable, ["-m", "fs_mlx.apps.cli", "run"], encoding="utf-8",
                          timeout=300, dimensions=(40, 200))
    child.logfile_read = log = LogBuffer()
    child.expect_exact(">>> ")
    assert "loading smollm2 (the default model)" in log.text
    child.sendline("What is the capital of France?")
    child.expect(STATS)
    reply = log.text.split("What is the capital of France?")[-1]
    assert "Paris" in reply
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    assert "Traceback" not in log.text


def test_generate_ctrl_c_keeps_the_partial_reply_and_exits_130(tiny_dir):
    child = pexpect.spawn(sys.executable, ["-m", "fs_mlx.apps.cli", "generate", str(tiny_dir), "-p", "hi",
                                           "-n", "3000", "--ignore-eos"], encoding="utf-8", timeout=60)
    child.logfile_read = log = LogBuffer()
    child.expect_exact("loaded in")
    child.expect(r"\S", timeout=30)
    time.sleep(0.5)  # mid-reply
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert re.search(r"generated \d+ tok .*\| finish: interrupted\]", log.text)
    assert "Traceback" not in log.text
