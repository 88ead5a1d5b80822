"""The command line: one-line errors, and no half-written artifact after a SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from moequant.cli import main


def test_unknown_verb_is_one_line_exit_2(capsys):
    try:
        main(["no-such-verb"])
    except SystemExit as exit_:
        assert exit_.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moequant: error:") and "no-such-verb" in err and "quantize" in err
    assert err.count("\n") == 0


def test_sigterm_leaves_no_partial_artifact(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "moequant", "build-demo", "--out", str(out), "--steps", "100000", "--quiet"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".tmp-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert list(tmp_path.glob(".tmp-*")), "the build never started writing"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert not out.exists()
    assert not list(tmp_path.glob(".tmp-*"))
