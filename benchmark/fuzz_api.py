"""Fuzz the HTTP API from its own ``/openapi.json`` with schemathesis: no request may get a 5xx.

    nox -s fuzz                          # installs schemathesis, then runs this
    python -m benchmark.fuzz_api --max-examples 200

Serves ``random:tiny`` with the a1 reference scheduler in this process (contexts capped at
``--max-model-len`` tokens, so that a valid request generated at random finishes quickly), then
runs ``schemathesis run`` against it with the ``not_a_server_error`` check, valid and invalid
requests alike. It prints schemathesis' summary and the KV blocks in use once the server is idle
(a request that broke the loop would leave some), and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time

from engine_core import Engine, EngineConfig
from engine_core.loop import EngineLoop
from engine_core.scheduler_loader import load_scheduler
from engine_core.server import BackgroundServer, create_app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=100, help="test cases per API operation")
    parser.add_argument("--max-model-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    schemathesis = shutil.which("schemathesis")
    if schemathesis is None:
        print("error: schemathesis is not installed (pip install schemathesis, or run nox -s fuzz)", file=sys.stderr)
        return 2
    engine = Engine(EngineConfig(model="random:tiny", device="cpu", max_model_len=args.max_model_len))
    loop = EngineLoop(engine, load_scheduler("a1", "solution"))
    loop.start()
    try:
        # In a scratch folder: schemathesis keeps a cache in its working directory.
        with BackgroundServer(create_app(loop, "random:tiny")) as server, tempfile.TemporaryDirectory() as scratch:
            done = subprocess.run(
                [schemathesis, "run", f"{server.base_url}/openapi.json", "--checks", "not_a_server_error",
                 "--max-examples", str(args.max_examples), "--seed", str(args.seed), "--workers", "1",
                 "--generation-database", "none", "--request-timeout", "60"],
                cwd=scratch, check=False)
            deadline = time.monotonic() + 30
            while loop.stats().num_running + loop.stats().num_waiting and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        loop.stop()
    print(f"KV blocks in use after the run: {engine.allocator.num_used} of {engine.allocator.num_blocks}")
    return done.returncode or int(engine.allocator.num_used != 0)


if __name__ == "__main__":
    sys.exit(main())
