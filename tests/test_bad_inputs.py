"""Inputs a new user gets wrong, each class once, run as users run the recipes: every one ends in one line
naming the key, file, line or value, exit 2, before training starts (``tests/test_faults.py`` holds the
faults of long runs and the bad values of the common keys)."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from tests.helpers import run_recipe, toy_texts, write_jsonl

pytestmark = pytest.mark.slow

QUICK = ["max_steps=2", "save_every=100", "eval_every=100", "log_every=1", "progress_bar=false", "report_to=[]",
         "micro_batch_size=8", "global_batch_size=8", "data.block_size=32", "tokenizer.vocab_size=300"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "train.jsonl", [{"text": t} for t in toy_texts(200)])


def last_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_one_line(proc, pattern: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(pattern, last_line(proc)), last_line(proc)


def run(recipe: str, tmp_path, *args: str, env: dict | None = None, timeout: int = 300):
    return run_recipe(recipe, f"output_dir={tmp_path / 'run'}", *QUICK, *args, env=env, timeout=timeout)


# ------------------------------------------------------------------------------- a Hub that never answers

@pytest.fixture(scope="module")
def silent_hub():
    """An endpoint that accepts connections and never answers: what a hung proxy or Hub looks like."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted, stop = [], threading.Event()

    def accept_and_stay_silent():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("load", [
    ["model.name_or_path=someone/model"],
    ["data.source=someone/corpus"],
    ["data.source=someone/corpus", "data.streaming=true"],
], ids=["model", "dataset", "streamed dataset"])
def test_a_silent_hub_ends_every_load_in_one_line_within_the_timeout(tmp_path, silent_hub, load):
    endpoint, accepted = silent_hub
    began = time.monotonic()
    proc = run("pretrain_mlm.py", tmp_path, *load, "hub_timeout=2",
               env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}, timeout=240)
    elapsed = time.monotonic() - began
    assert accepted, "the run never reached the server"
    key, name = load[0].split("=")
    assert_one_line(proc, rf"^error: {re.escape(key)} {name}: the Hub at {endpoint} did not answer within hub_timeout=2s")
    assert elapsed < 90  # start-up and one timed-out request, not the loaders' minutes of retries
