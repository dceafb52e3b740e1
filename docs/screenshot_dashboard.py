"""Write docs/dashboard.png: `nas-attn dashboard` on a real study, photographed by chromium.

    python docs/screenshot_dashboard.py --runs-dir RUNS --study NAME [--out docs/dashboard.png]

RUNS is a runs folder holding `nas_attn.db` (for the README's picture: the `--runs-dir` of a
`benchmarks/search_quality.py --data builtin` run, study `searched`). Serves it with
`python -m nas_attn.cli dashboard` on a free local port, opens the study's page in headless
Debian chromium through playwright (never playwright's own browser download), waits for the
plots, and saves one full-page PNG. Needs `apt-get install chromium` and the dev extra.
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/api/studies")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def study_id(runs: Path, name: str) -> int:
    from nas_attn.searching.study import open_storage

    return open_storage(None, runs).get_study_id_from_name(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("dashboard.png"))
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    args = ap.parse_args()
    chromium = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"))
                     if p and os.path.exists(p)), None)
    if chromium is None:
        sys.exit("chromium not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    sid = study_id(args.runs_dir, args.study)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nas_attn.cli", "dashboard", "--runs-dir",
                             str(args.runs_dir), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the dashboard did not start (exit code {proc.poll()})")
            time.sleep(0.25)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.set_default_timeout(30_000)
                page.goto(f"http://127.0.0.1:{port}/dashboard/studies/{sid}")
                page.get_by_text("Study User Attributes").wait_for()
                page.locator(".js-plotly-plot").first.wait_for()
                time.sleep(3)  # plotly draws after the data arrives
                page.screenshot(path=str(args.out), full_page=True)
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
