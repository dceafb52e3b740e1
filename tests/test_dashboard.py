"""`nas-attn dashboard` end to end in a real browser.

Needs: Debian's chromium (`apt-get install chromium`, at /usr/bin/chromium or on PATH) and the
Python `playwright` package (the dev extra). Playwright's own browser download is never used.
Skipped, with the reason, when either is absent; CI (.ci/run) installs chromium with apt.

Builds a tiny finished study on CPU, serves it with `python -m nas_attn.cli dashboard` in a
subprocess, and checks in headless chromium that optuna-dashboard shows the study, a trial's
`arch_summary` user attribute, its architecture note (markdown table of sites) and its artifacts.
"""
import http.client
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import optuna
import pytest

from nas_attn.searching.opening import SearchRequest, open_search

from nas_attn.searching.run import run_search

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and
                 os.path.exists(p)), None)
# flags for a closed network: without the background-networking ones chromium keeps trying
# (and failing) to reach Google's services
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

pytestmark = [
    pytest.mark.skipif(sync_playwright is None,
                       reason="browser test: needs the `playwright` Python package "
                              "(pip install -e '.[dev]')"),
    pytest.mark.skipif(CHROMIUM is None,
                       reason="browser test: needs Debian's chromium (apt-get install chromium); "
                              "not found at /usr/bin/chromium or on PATH"),
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

optuna.logging.set_verbosity(optuna.logging.WARNING)


STUDY = "dash_tiny"
START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    # http.client, not urllib: a proxy from the environment must not get in the way
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/api/studies")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


@pytest.fixture
def finished_study(tmp_path, tiny_space):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(tiny_space))
    runs = tmp_path / "runs"
    session = open_search(SearchRequest(space=space, runs_dir=runs, study=STUDY))
    run_search(session, 2, None)
    return session.study, runs


@pytest.fixture
def dashboard(finished_study, tmp_path):
    """The `nas-attn dashboard` subprocess on a free port; always stopped afterwards."""
    _, runs = finished_study
    port = _free_port()
    log_path = tmp_path / "dashboard.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nas_attn.cli", "dashboard", "--runs-dir", str(runs),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _answers(port):
                if proc.poll() is not None:
                    pytest.fail(f"the dashboard exited with code {proc.returncode}:\n"
                                f"{log_path.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not answer on port {port} within "
                                f"{START_TIMEOUT_S} s:\n{log_path.read_text()}")
                time.sleep(0.25)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_dashboard_shows_study_trial_arch_note_and_artifacts(finished_study, dashboard):
    study, _ = finished_study
    study_id = study._storage.get_study_id_from_name(STUDY)  # 1 in a fresh sqlite file
    t0, t1 = study.trials
    s0, s1 = t0.user_attrs["arch_summary"], t1.user_attrs["arch_summary"]
    assert "2D d1 w4-8" in s0 and "2D d1 w4-8" in s1 and s0 != s1
    artifacts0 = sorted(a.filename for a in optuna.artifacts.get_all_artifact_meta(t0,
                        storage=study._storage))
    assert "preview.png" in artifacts0

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(20_000)

            # the study page: its name in the app bar
            page.goto(f"{dashboard}/dashboard/studies/{study_id}")
            expect(page.locator("header")).to_contain_text(STUDY)
            expect(page.get_by_text("Study User Attributes")).to_be_visible()
            # the objective has a name, not "Objective 0"
            expect(page.get_by_text("val Dice (per class, pooled)").first).to_be_attached()
            assert page.get_by_text("Objective 0").count() == 0

            # the trial list: trial 0 (the plain_unet baseline) is selected first
            page.goto(f"{dashboard}/dashboard/studies/{study_id}/trials")
            expect(page.locator("header")).to_contain_text(STUDY)
            expect(page.locator("h4")).to_contain_text(f"Trial {t0.number}")
            # the user attribute row: "<key> <value>" in one paragraph
            expect(page.get_by_text(f"arch_summary {s0}", exact=True)).to_be_visible()
            # the note: the summary in bold and a table of sites
            note = page.locator("table").filter(has_text="attention")
            expect(note).to_be_visible()
            expect(note.locator("tr").filter(has_text="skip.0")).to_contain_text("none")
            expect(page.locator("strong").filter(has_text=s0)).to_be_visible()
            for name in artifacts0:
                expect(page.get_by_text(name, exact=True).first).to_be_attached()

            # select trial 1 (the attention_unet baseline: a gate on the skip)
            page.get_by_text(f"Trial {t1.number}", exact=True).click()
            expect(page.locator("h4")).to_contain_text(f"Trial {t1.number}")
            expect(page.get_by_text(f"arch_summary {s1}", exact=True)).to_be_visible()
            expect(note.locator("tr").filter(has_text="skip.0")).to_contain_text("gate")
        finally:
            browser.close()
