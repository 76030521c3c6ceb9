"""The learner's command: `python -m fs_mlx.msl` prints a kernel's insides."""

import re

from fs_mlx.msl.__main__ import main


def test_demo_prints_intermediate_values_that_add_up(capsys):
    assert main(["--rows", "2", "--dim", "100", "--threadgroup", "64", "--order", "reverse"]) == 0
    out = capsys.readouterr().out
    assert "2 threadgroup(s) of 64 threads = 2 SIMD group(s) each, order=reverse" in out
    # each row: the row sum printed by the kernel equals numpy's
    kernel_sums = [float(m) for m in re.findall(r"^\s+0\s+0\s+0\s+\S+\s+\S+\s+(\S+)", out, re.M)]
    numpy_sums = [float(m) for m in re.findall(r"numpy: sum\(x\^2\) = (\S+),", out)]
    assert len(kernel_sums) == 2 and len(numpy_sums) == 2
    for k, n in zip(kernel_sums, numpy_sums):
        assert abs(k - n) < 1e-3 * n  # printed with 4 decimals
    assert re.search(r"max \|kernel - numpy\| over the output: \d\.\d+e-0[6-9]", out)


def test_demo_can_show_the_generated_source(capsys):
    assert main(["--show-source"]) == 0
    out = capsys.readouterr().out
    assert "[[kernel]] void custom_kernel_rms_norm_demo" in out
    assert "uint3 threadgroup_position_in_grid [[threadgroup_position_in_grid]]" in out


def test_direct_mode_is_chosen_only_without_blocking_calls():
    from fs_mlx.msl import metal_kernel

    assert metal_kernel("a", ["x"], ["o"], "uint i = thread_index_in_simdgroup; o[i] = x[i];").direct
    assert not metal_kernel("b", ["x"], ["o"], "o[0] = simd_sum(x[0]);").direct
    assert not metal_kernel("c", ["x"], ["o"], "o[0] = f(x[0]);", header="float f(float v) { return simd_max(v); }").direct
