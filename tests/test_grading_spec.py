"""Grading specs: the a1 spec documents every field, and parsing is strict (each mistake is a
one-line SpecError naming the key); engine settings, workloads, gates and profiles parse."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from autograder.spec import CorrectnessSpec, SpecError, load_spec

from .test_grader import ROOT, write_spec

def test_the_default_spec_loads_and_documents_every_field():
    spec = load_spec(ROOT / "solutions" / "a1" / "spec.toml")
    assert spec.total_points == 100 and list(spec.parts) == ["tests", "correctness", "accuracy", "performance"]
    assert spec.parts["performance"].requires == ("correctness",)
    text = (ROOT / "solutions" / "a1" / "spec.toml").read_text()
    for line in text.splitlines():  # every key has a comment on its line or just above it
        if "=" in line and not line.lstrip().startswith("#"):
            index = text.splitlines().index(line)
            assert "#" in line or text.splitlines()[index - 1].lstrip().startswith("#"), line


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("num_prompts = 3", "num_promts = 3"), "unknown key 'num_promts'"),
    (lambda s: s.replace("points = 20\ntime_limit_s = 240\nmmlu", "time_limit_s = 240\nmmlu"), "missing key 'points'"),
    (lambda s: s.replace("max_tokens = 6", "max_tokens = 'six'"), "must be an integer"),
    (lambda s: s.replace('requires = ["correctness"]', 'requires = ["performance"]'), "not a part graded before"),
    (lambda s: s.replace("full = 1.1", "full = 0.4"), "ratio gate needs full > zero"),
])
def test_spec_errors_name_the_key(tmp_path, edit, message):
    path = write_spec(tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


FULL_SPEC = """
assignment = "a1"
baseline = "a0"
reference = "a1"

[engine]
num_kv_blocks = 256
block_size = 32
max_model_len = 1024

[parts.correctness]
points = 10
time_limit_s = 60
workload = "shared-prefix"
ignore_eos = false
num_kv_blocks = 24
min_preemptions = 1
min_cached_tokens = 32
min_accepted_tokens = 4

[parts.performance]
points = 20
time_limit_s = 60
workload = "long-prompt-mix"
randomness = 0.5
output_slack = 1.5

[[parts.performance.gates]]
metric = "itl_p99"
compare = "ratio"
requests = "short"
zero = 1.0
full = 1.5
points = 12

[[parts.performance.gates]]
metric = "ttft_p50"
compare = "absolute"
zero = 2000
full = 500
points = 8

[profiles.gpu.engine]
device = "cuda"
dtype = "bfloat16"
model = "random:qwen3-4b"

[profiles.gpu.parts.performance]
time_limit_s = 300

[[profiles.gpu.parts.performance.gates]]
metric = "output_throughput"
compare = "ratio"
zero = 2.0
full = 4.0
points = 20
"""


def full_spec(tmp_path: Path, edit: Any = lambda s: s) -> Path:
    path = tmp_path / "full.toml"
    path.write_text(edit(FULL_SPEC))
    return path


def test_engine_settings_workloads_gates_and_profiles_parse(tmp_path):
    spec = load_spec(full_spec(tmp_path))
    assert (spec.engine.num_kv_blocks, spec.engine.block_size, spec.engine.max_model_len) == (256, 32, 1024)
    corr = spec.parts["correctness"]
    assert isinstance(corr, CorrectnessSpec) and corr.workload == "shared-prefix" and corr.ignore_eos is False
    assert (corr.num_kv_blocks, corr.min_preemptions, corr.min_cached_tokens, corr.min_accepted_tokens) == (24, 1, 32, 4)
    perf = spec.parts["performance"]
    assert (perf.workload, perf.randomness, perf.output_slack) == ("long-prompt-mix", 0.5, 1.5)
    assert [(g.metric, g.compare, g.requests, g.points) for g in perf.gates] == [
        ("itl_p99", "ratio", "short", 12), ("ttft_p50", "absolute", "all", 8)]
    assert perf.gates[0].lower_is_better and spec.profile == ""
    # The profile: engine settings merged key by key, the gates replaced as a whole.
    gpu = load_spec(full_spec(tmp_path), profile="gpu")
    assert (gpu.profile, gpu.engine.device, gpu.engine.dtype, gpu.engine.model) == ("gpu", "cuda", "bfloat16",
                                                                                   "random:qwen3-4b")
    assert gpu.engine.num_kv_blocks == 256 and gpu.parts["performance"].time_limit_s == 300
    assert [(g.metric, g.full) for g in gpu.parts["performance"].gates] == [("output_throughput", 4.0)]
    # The part processes read the text the parent read: the profile travels in it.
    copy = tmp_path / "copy.toml"
    copy.write_text(gpu.text)
    assert load_spec(copy) == dataclasses.replace(gpu, path=copy)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("block_size = 32", "block_size = 0"), "[engine]: 'block_size' must be at least 1, not 0"),
    (lambda s: s.replace('workload = "shared-prefix"', 'workload = "chatty"'), "'workload' must be one of 'chat'"),
    (lambda s: s.replace("ignore_eos = false", 'ignore_eos = "no"'), "'ignore_eos' must be true or false"),
    (lambda s: s.replace("min_preemptions = 1", "min_preemptions = -1"), "'min_preemptions' must be at least 0"),
    (lambda s: s.replace("output_slack = 1.5", "output_slack = 0.5"), "'output_slack' must be at least 1"),
    (lambda s: s.replace('metric = "itl_p99"', 'metric = "speed"'), "'gates' #1: 'metric' must be one of"),
    (lambda s: s.replace("zero = 2000", "treshold = 2000"), "'gates' #2: unknown key 'treshold'"),
    (lambda s: s.replace('metric = "itl_p99"', 'metric = "preemptions"'), "server counter"),
    (lambda s: s.replace("full = 500", "full = 3000"), "lower ttft_p50 is better, so full must be below zero"),
    (lambda s: s.replace("points = 8", "points = 9"), "the gates' points add up to 21, not the part's 20"),
    (lambda s: s.replace('workload = "long-prompt-mix"', 'workload = "default"'), "needs workload 'long-prompt-mix'"),
    (lambda s: s.replace('device = "cuda"', 'devise = "cuda"'), "[profiles.gpu].engine: unknown key 'devise'"),
    (lambda s: s + "[profiles.gpu.parts.accuracy]\npoints = 1\n", "[profiles.gpu].parts: unknown key 'accuracy'"),
    (lambda s: s.replace("time_limit_s = 300", "time_limit_s = 'long'"), "(profile gpu): [parts.performance]: "
                                                                          "'time_limit_s' must be a number"),
])
def test_bad_values_are_one_line_spec_errors_naming_the_key(tmp_path, edit, message):
    with pytest.raises(SpecError) as caught:
        load_spec(full_spec(tmp_path, edit))
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_a_performance_part_needs_gates_and_a_profile_must_exist(tmp_path):
    no_gates = FULL_SPEC.split("[[parts.performance.gates]]")[0]
    with pytest.raises(SpecError, match="needs at least one"):
        load_spec(full_spec(tmp_path, lambda s: no_gates))
    with pytest.raises(SpecError, match=r"there is no \[profiles.tpu\] \(profiles: gpu\)"):
        load_spec(full_spec(tmp_path), profile="tpu")
    with pytest.raises(SpecError, match="conflicts with --profile gpu"):
        load_spec(full_spec(tmp_path, lambda s: 'profile = "other"\n' + s + "[profiles.other]\n"), profile="gpu")
