"""Serving latency and throughput: `mlops serve` against `mlflow models serve` on the same model.

A small model is trained in a throw-away MLOPS_HOME (embedded PostgreSQL, or DATABASE_URL's
server when set) and made champion. Both servers run as subprocesses on 127.0.0.1 (free ports),
one worker each; inference logging stays on for `mlops serve` (rows really reach PostgreSQL).
A keep-alive HTTP/1.1 load generator (asyncio protocols, one connection per concurrent client) sends
single-product predictions: a bounded number of requests per setting (default 2,000, at most
60 s), after a warm-up. This process never imports mlflow: the model is trained in a child
process and MLflow's server is run as `python -m mlflow models serve`.

Targets: p99 < 20 ms at concurrency 16 for `mlops serve`; its throughput >= 2x mlflow serve.
Prints a table, writes benchmarks/results/bench_serve.json.

--shadow adds the shadow challenger's cost (docs/shadow.md): a second version is trained and
made the challenger, and two `mlops serve` run side by side, one without the shadow and one with
it (SHADOW_ENABLED=true: every request also scored by the challenger in the shadow worker
process, its rows written to shadow_predictions). At the highest concurrency they are loaded in
turn, --rounds times each, alternating (a shared machine's load changes over a run: alternating
spreads it over both); the medians are compared. Targets: throughput with the shadow >= 90% of
without, p99 at most +15%.

--floor adds a third server: the same API and workers with each single-product prediction
replaced by one made at startup (the cleaned text of each request still goes to the inference
log, which does its usual work). The gap between the two is what the model costs on this
machine; the floor is what the rest of the stack (HTTP, validation, metrics, inference
logging, the database, the load generator on the same CPUs) costs.
Usage: python benchmarks/bench_serve.py [--rows 5000] [--requests 2000] [--workers 1] [--floor]
       [--shadow [--rounds 3]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, print_table, write_results  # noqa: E402

SETUP = r"""
import json, sys
from mlops_cli import config, db, registry
from mlops_cli.runs import Trigger
from mlops_cli.steps.load import load
from mlops_cli.steps.train import train
from mlops_cli.synth import write_catalogue

rows, out, with_challenger = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
s = config.load_settings()
x, y = write_catalogue(out, rows=rows, seed=3)
conn = db.open_db(s)
try:
    load(conn, s, Trigger(actor="bench"), x_path=str(x), y_path=str(y))
    result = train(conn, s, Trigger(actor="bench"), force=True)
    # the challenger: trained the same way (its search too), so it costs what a real one does
    second = train(conn, s, Trigger(actor="bench"), force=True) if with_challenger else None
finally:
    conn.close()
version = result.outputs["model_version"]
registry.set_alias(s, registry.CHAMPION, version)
challenger = None
if second is not None:
    challenger = second.outputs["model_version"]
    registry.set_alias(s, registry.CHALLENGER, challenger)
else:
    registry.delete_alias(s, registry.CHALLENGER)  # train set it to the champion's version
print(json.dumps({"version": version, "challenger": challenger, "tracking_uri": registry.tracking_uri(s),
                  "x_path": str(x), "weighted_f1": result.outputs["weighted_f1"]}))
"""


# The --floor server's application module (imported by uvicorn in each worker process).
FLOOR_APP = r"""
import dataclasses

from mlops_cli import serving
from mlops_cli.api import create_app  # noqa: F401  (uvicorn's factory)
from mlops_cli.features import clean_text

_predict, _canned = serving.LoadedModel.predict, {}


def predict(self, items, top_k=3):
    if len(items) != 1:
        return _predict(self, items, top_k)
    key = (self.version, top_k)
    if key not in _canned:
        _canned[key] = _predict(self, items, top_k)
    (title, description), = items
    return dataclasses.replace(_canned[key], cleaned=[(clean_text(title), clean_text(description))])


serving.LoadedModel.predict = predict
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready ({url})")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in a process group (the server and its workers)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: process group id
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (with --workers 1 the API itself, not its shadow worker)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


# --- the load generator ------------------------------------------------------------------------------
# One asyncio Protocol per connection (keep-alive HTTP/1.1, one request in flight each): callbacks,
# no coroutine per request, so the generator spends ~50 us of CPU per request and leaves the
# machine's cores to the server (its CPU per request is printed too).
class _Connection(asyncio.Protocol):
    def __init__(self, run: "_Run"):
        self.run = run
        self.buf = b""
        self.sent = 0.0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        request = self.run.next_request()
        if request is None:
            self.transport.close()
            return
        self.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head[1:])}
        if "content-length" not in headers:
            self.run.errors.append("response without Content-Length")
            self.transport.close()
            return
        size = end + 4 + int(headers["content-length"])
        if len(self.buf) < size:
            return
        body, self.buf = self.buf[end + 4:size], self.buf[size:]
        self.run.latencies.append(time.perf_counter() - self.sent)
        status = int(head[0].split()[1])
        if status != 200:
            self.run.errors.append(f"{status}: {body[:200]!r}")
        self._send()

    def connection_lost(self, exc) -> None:
        if exc is not None:
            self.run.errors.append(f"connection lost: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)


class _Run:
    def __init__(self, port: int, path: str, bodies: list[bytes], requests: int, time_limit: float):
        self.requests = [(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
        self.limit, self.deadline = requests, time.perf_counter() + time_limit
        self.issued = 0
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def next_request(self) -> bytes | None:
        if self.issued >= self.limit or time.perf_counter() > self.deadline:
            return None
        self.issued += 1
        return self.requests[self.issued % len(self.requests)]


async def _load(port: int, path: str, bodies: list[bytes], concurrency: int, requests: int,
                time_limit: float) -> dict:
    loop = asyncio.get_running_loop()
    run = _Run(port, path, bodies, requests, time_limit)
    started, cpu0 = time.perf_counter(), time.process_time()
    conns = [(await loop.create_connection(lambda: _Connection(run), "127.0.0.1", port))[1]
             for _ in range(concurrency)]
    await asyncio.gather(*(c.closed for c in conns))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    lat = sorted(run.latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return {"requests": len(lat), "errors": len(run.errors), "first_error": run.errors[0] if run.errors else None,
            "seconds": round(seconds, 3), "rps": round(len(lat) / seconds, 1) if seconds else 0.0,
            "p50_ms": round(pct(0.50), 2), "p90_ms": round(pct(0.90), 2), "p99_ms": round(pct(0.99), 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "client_cpu_ms_per_request": round(cpu * 1000 / max(1, len(lat)), 3)}


def run_load(port, path, bodies, concurrency, requests, time_limit) -> dict:
    try:
        import uvloop  # a faster event loop keeps the client's own overhead out of the numbers

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(_load(port, path, bodies, concurrency, min(200, requests), 20.0))  # warm-up
    return runner(_load(port, path, bodies, concurrency, requests, time_limit))


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def config_default(field: str):
    from mlops_cli.config import Settings

    return getattr(Settings(), field)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as m:
        return m.read().decode()


def drain_shadow(port: int, timeout: float = 120.0) -> tuple[int, float]:
    """(shadow items pending when called, seconds until none is): polled on /health."""
    started = time.monotonic()
    first = None
    while time.monotonic() - started < timeout:
        shadow = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())["shadow"]
        first = shadow["pending"] if first is None else first
        if shadow["pending"] <= 0:
            break
        time.sleep(0.05)
    return first, round(time.monotonic() - started, 2)


def shadow_comparison(args, data: Path, server_env: dict, bodies: list[bytes], concurrency: int,
                      challenger: str, results: dict, extra: dict) -> None:
    """`mlops serve` without and with the shadow, both up, loaded in alternating rounds at
    `concurrency`; the medians and their ratios go to `extra["shadow"]` (see the docstring)."""
    import statistics

    names = {"without shadow": "false", "with shadow": "true"}
    ports = {name: free_port() for name in names}
    procs, logs = {}, {}
    try:
        for name, enabled in names.items():
            logs[name] = open(data / f"shadow-{enabled}.log", "wb")
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "mlops_cli.cli", "serve", "--host", "127.0.0.1", "--port", str(ports[name]),
                 "--workers", str(args.workers), "--log-level", "warning"],
                env=dict(server_env, SHADOW_ENABLED=enabled,
                         **({"SHADOW_NICE": str(args.shadow_nice)} if args.shadow_nice is not None else {})),
                stdout=logs[name], stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        for name in names:
            wait_ready(f"http://127.0.0.1:{ports[name]}/health", procs[name])
        # the shadow worker has loaded the challenger once /health names it
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ports['with shadow']}/health").read())
            if (health.get("shadow") or {}).get("challenger_version") == challenger:
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"the shadow worker never loaded challenger v{challenger}: {health.get('shadow')}")
        rounds: dict[str, list[dict]] = {name: [] for name in names}
        for i in range(args.rounds):
            order = list(names) if i % 2 == 0 else list(reversed(names))
            for name in order:
                cpu0, api0 = group_cpu_seconds(procs[name].pid), process_cpu_seconds(procs[name].pid)
                r = run_load(ports[name], "/predict", bodies, concurrency, args.requests, args.time_limit)
                warm = min(200, args.requests)
                r["server_cpu_ms_per_request"] = round(  # the shadow worker is in the server's process group
                    (group_cpu_seconds(procs[name].pid) - cpu0) * 1000 / max(1, r["requests"] + warm), 3)
                if args.workers == 1:  # the API process alone: what the shadow costs the request path itself
                    r["api_process_cpu_ms_per_request"] = round(
                        (process_cpu_seconds(procs[name].pid) - api0) * 1000 / max(1, r["requests"] + warm), 3)
                r["load_average_1m"] = round(os.getloadavg()[0], 2)
                if name == "with shadow":
                    # the shadow's backlog is scored before the next round: its CPU must not land on
                    # the other server's round (a niced worker catches up after the load)
                    r["shadow_pending_at_end"], r["shadow_drain_s"] = drain_shadow(ports[name])
                    r["server_cpu_with_drain_ms_per_request"] = round(
                        (group_cpu_seconds(procs[name].pid) - cpu0) * 1000 / max(1, r["requests"] + warm), 3)
                rounds[name].append(r)
                drained = (f"  shadow backlog {r['shadow_pending_at_end']} items, drained in {r['shadow_drain_s']:.1f}s, "
                           f"CPU with it {r['server_cpu_with_drain_ms_per_request']:.2f} ms/request"
                           if name == "with shadow" else "")
                print(f"  {name} round {i + 1}: {r['rps']:>8.1f} req/s  p50 {r['p50_ms']:.2f} ms  p99 "
                      f"{r['p99_ms']:.2f} ms  errors {r['errors']}  server CPU {r['server_cpu_ms_per_request']:.2f} "
                      f"ms/request (API process {r.get('api_process_cpu_ms_per_request', float('nan')):.2f})  "
                      f"load {r['load_average_1m']}{drained}", flush=True)
        time.sleep(2.5)  # the shadow worker and the inference log drain
        text = scrape(ports["with shadow"])
    finally:
        for name, proc in procs.items():
            stop(proc)
            logs[name].close()
    summary = {}
    for name, runs in rounds.items():
        med = {k: round(statistics.median(r[k] for r in runs), 3)
               for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "server_cpu_ms_per_request",
                         "client_cpu_ms_per_request", "load_average_1m")}
        med.update(requests=sum(r["requests"] for r in runs), errors=sum(r["errors"] for r in runs),
                   seconds=round(sum(r["seconds"] for r in runs), 3))
        if args.workers == 1:
            med["api_process_cpu_ms_per_request"] = statistics.median(r["api_process_cpu_ms_per_request"] for r in runs)
        if name == "with shadow":
            med["shadow_drain_s"] = statistics.median(r["shadow_drain_s"] for r in runs)
            med["server_cpu_with_drain_ms_per_request"] = statistics.median(
                r["server_cpu_with_drain_ms_per_request"] for r in runs)
        results[f"mlops serve {name} c={concurrency} (median of {len(runs)})"] = med
        summary[name] = {"median": med, "rounds": runs}
    a, b = summary["without shadow"]["median"], summary["with shadow"]["median"]
    dropped = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                  if ln.startswith("mlops_shadow_dropped_items_total{"))
    extra["shadow"] = {
        "concurrency": concurrency, "rounds": args.rounds, "challenger": challenger,
        "shadow_nice": args.shadow_nice if args.shadow_nice is not None else config_default("shadow_nice"),
        "rps_without": a["rps"], "rps_with": b["rps"], "throughput_ratio": round(b["rps"] / a["rps"], 3),
        "p99_without_ms": a["p99_ms"], "p99_with_ms": b["p99_ms"], "p99_ratio": round(b["p99_ms"] / a["p99_ms"], 3),
        "scored": metric(text, "mlops_shadow_scored_items_total"),
        "written": metric(text, "mlops_shadow_written_rows_total"),
        "errors": metric(text, "mlops_shadow_errors_total"), "dropped": dropped,
        "drain_s_median": b["shadow_drain_s"],
        "cpu_ms_per_request_without": a["server_cpu_ms_per_request"],
        "api_process_cpu_ms_per_request_without": a.get("api_process_cpu_ms_per_request"),
        "api_process_cpu_ms_per_request_with": b.get("api_process_cpu_ms_per_request"),
        "cpu_ms_per_request_with_drain": b["server_cpu_with_drain_ms_per_request"],
        "per_round": {name: s["rounds"] for name, s in summary.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000, help="catalogue rows to train on")
    ap.add_argument("--requests", type=int, default=2000, help="requests per setting")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per setting, at most")
    ap.add_argument("--workers", type=int, default=1, help="worker processes of each server")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--no-mlflow", action="store_true", help="skip `mlflow models serve` (quick runs)")
    ap.add_argument("--floor", action="store_true",
                    help="also serve a canned prediction: what the stack costs without the model")
    ap.add_argument("--shadow", action="store_true",
                    help="also compare `mlops serve` with and without the shadow challenger (same run)")
    ap.add_argument("--rounds", type=int, default=3, help="--shadow: alternating rounds of each")
    ap.add_argument("--shadow-nice", type=int, default=None,
                    help="--shadow: SHADOW_NICE of the shadow worker (default: the setting's default)")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    import pandas as pd

    with bench_home("serve") as settings:
        env = dict(os.environ, MLOPS_HOME=str(settings.home.resolve()), MODEL_NAME=settings.model_name,
                   INITIAL_LOAD_FRACTION="1.0", MLOPS_LOG_FORMAT="text")
        data = Path(tempfile.mkdtemp(prefix="mlops-bench-data-"))
        print(f"training a model on {args.rows} generated rows ...", flush=True)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", SETUP, str(args.rows), str(data), "1" if args.shadow else "0"],
                             env=env, check=True, capture_output=True, text=True)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        train_s = time.perf_counter() - t
        version = info["version"]
        print(f"version {version} (weighted F1 {info['weighted_f1']:.3f}) in {train_s:.0f}s", flush=True)

        x = pd.read_csv(info["x_path"], index_col=0, dtype=str, keep_default_na=False)
        sample = x.sample(n=min(500, len(x)), random_state=1)
        products = [{"designation": d, "description": s or None, "productid": int(p)}
                    for d, s, p in zip(sample["designation"], sample["description"], sample["productid"])]
        bodies = {
            "mlops serve": [json.dumps(p).encode() for p in products],
            "mlflow models serve": [json.dumps({"dataframe_split": {
                "columns": ["designation", "description"],
                "data": [[p["designation"], p["description"] or ""]]}}).encode() for p in products],
        }
        ports = {"mlops serve": free_port(), "mlflow models serve": free_port()}
        commands = {
            "mlops serve": [sys.executable, "-m", "mlops_cli.cli", "serve", "--host", "127.0.0.1", "--port",
                            str(ports["mlops serve"]), "--workers", str(args.workers), "--log-level", "warning"],
            "mlflow models serve": [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                    f"models:/{settings.model_name}/{version}", "--env-manager", "local",
                                    "-h", "127.0.0.1", "-p", str(ports["mlflow models serve"]),
                                    "-w", str(args.workers)],
        }
        paths = {"mlops serve": "/predict", "mlflow models serve": "/invocations"}
        ready_urls = {"mlops serve": f"http://127.0.0.1:{ports['mlops serve']}/health",
                      "mlflow models serve": f"http://127.0.0.1:{ports['mlflow models serve']}/ping"}
        # mlflow's server execs `uvicorn` by name: the interpreter's bin directory goes first on PATH
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        server_env = dict(env, MLFLOW_TRACKING_URI=info["tracking_uri"], INFERENCE_LOG_FLUSH_SECONDS="1",
                          PATH=path)
        envs = {name: server_env for name in commands}
        if args.floor:
            floor = "floor (canned prediction)"
            (data / "bench_floor_app.py").write_text(FLOOR_APP)
            ports[floor] = free_port()
            bodies[floor], paths[floor] = bodies["mlops serve"], "/predict"
            ready_urls[floor] = f"http://127.0.0.1:{ports[floor]}/health"
            commands[floor] = [sys.executable, "-m", "uvicorn", "bench_floor_app:create_app", "--factory",
                               "--host", "127.0.0.1", "--port", str(ports[floor]), "--workers",
                               str(args.workers), "--log-level", "warning", "--no-access-log"]
            envs[floor] = dict(server_env, PYTHONPATH=os.pathsep.join([str(data), os.environ.get("PYTHONPATH", "")]))
            if args.workers > 1:  # what `mlops serve --workers` sets up, for uvicorn run directly
                (data / "floor-metrics").mkdir()
                envs[floor]["PROMETHEUS_MULTIPROC_DIR"] = str(data / "floor-metrics")
        logs = {name: open(data / f"{name.split()[0]}.log", "wb") for name in commands}
        results: dict[str, dict] = {}
        extra: dict = {"model_version": version, "train_rows": args.rows, "workers": args.workers,
                       "requests_per_setting": args.requests}
        if args.no_mlflow:
            del commands["mlflow models serve"]
        for name, cmd in commands.items():
            proc = subprocess.Popen(cmd, env=envs[name], stdout=logs[name], stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                startup = wait_ready(ready_urls[name], proc)
                extra[f"{name} startup_s"] = round(startup, 1)
                print(f"{name}: ready in {startup:.1f}s on port {ports[name]}", flush=True)
                for c in levels:
                    cpu0 = group_cpu_seconds(proc.pid)
                    r = run_load(ports[name], paths[name], bodies[name], c, args.requests, args.time_limit)
                    # server CPU per request: warm-up included in both terms, background work too
                    warm = min(200, args.requests)
                    r["server_cpu_ms_per_request"] = round(
                        (group_cpu_seconds(proc.pid) - cpu0) * 1000 / max(1, r["requests"] + warm), 3)
                    r["load_average_1m"] = round(os.getloadavg()[0], 2)
                    results[f"{name} c={c}"] = r
                    print(f"  concurrency {c:>2}: {r['rps']:>8.1f} req/s  p50 {r['p50_ms']:.2f} ms  "
                          f"p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  server CPU "
                          f"{r['server_cpu_ms_per_request']:.2f} ms/request (client {r['client_cpu_ms_per_request']:.2f})  "
                          f"load {r['load_average_1m']}",
                          flush=True)
                if name == "mlops serve":
                    time.sleep(2.5)  # let the inference log drain
                    with urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/metrics", timeout=5) as m:
                        text = m.read().decode()
                    extra["inference_log_written_rows"] = metric(text, "mlops_inference_log_written_rows_total")
                    extra["inference_log_buffer_rows"] = metric(text, "mlops_inference_log_buffer_rows")
                    extra["inference_log_dropped_rows"] = sum(
                        float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                        if ln.startswith("mlops_inference_log_dropped_rows_total{"))
                    extra["fast_path"] = json.loads(urllib.request.urlopen(ready_urls[name]).read())["fast_path"]
                    check = products[:20]
                    ours = [post(f"http://127.0.0.1:{ports[name]}/predict", p)["prdtypecode"] for p in check]
                elif name == "mlflow models serve":
                    theirs = post(f"http://127.0.0.1:{ports[name]}/invocations", {"dataframe_split": {
                        "columns": ["designation", "description"],
                        "data": [[p["designation"], p["description"] or ""] for p in check]}})["predictions"]
                    extra["same_predictions_as_mlflow"] = [int(v) for v in theirs] == ours
            except Exception:
                print(f"{name} failed; its log: {logs[name].name}", file=sys.stderr)
                raise
            finally:
                stop(proc)
                logs[name].close()
        if args.shadow:
            shadow_comparison(args, data, server_env, bodies["mlops serve"], max(levels), info["challenger"],
                              results, extra)
        shutil.rmtree(data, ignore_errors=True)  # kept above when a server failed, for its log

    rows = [(k, v["requests"], v["errors"], f"{v['rps']:.1f}", f"{v['p50_ms']:.2f}", f"{v['p90_ms']:.2f}",
             f"{v['p99_ms']:.2f}", f"{v['max_ms']:.2f}", f"{v['server_cpu_ms_per_request']:.2f}",
             f"{v['client_cpu_ms_per_request']:.2f}", f"{v['load_average_1m']:.1f}") for k, v in results.items()]
    print()
    print_table(rows, ("server", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
                       "server CPU ms/req", "client CPU ms/req", "load avg"))
    targets = {}
    top = max(levels)
    ours, theirs = results.get(f"mlops serve c={top}"), results.get(f"mlflow models serve c={top}")
    if ours:
        targets[f"p99 < 20 ms at concurrency {top}"] = ours["p99_ms"] < 20
        # With one request at a time per worker, `top` requests in flight wait for each other:
        # mean latency >= top x CPU per request / workers, whatever the server does.
        extra["queueing_floor_ms"] = round(top * ours["server_cpu_ms_per_request"] / args.workers, 1)
    for c in levels:
        a, b = results.get(f"mlops serve c={c}"), results.get(f"mlflow models serve c={c}")
        if a and b:
            extra[f"speedup c={c}"] = round(a["rps"] / b["rps"], 2) if b["rps"] else None
            targets[f"throughput >= 2x mlflow serve at concurrency {c}"] = bool(b["rps"]) and a["rps"] >= 2 * b["rps"]
    if "shadow" in extra:
        sh = extra["shadow"]
        targets[f"shadow costs <= 10% throughput at concurrency {sh['concurrency']}"] = sh["throughput_ratio"] >= 0.90
        targets[f"shadow adds <= 15% to p99 at concurrency {sh['concurrency']}"] = sh["p99_ratio"] <= 1.15
    targets["no failed request"] = all(v["errors"] == 0 for v in results.values())
    print()
    for k, ok in targets.items():
        print(f"target {k}: {'PASS' if ok else 'FAIL'}")
    if "queueing_floor_ms" in extra:
        print(f"queueing floor at concurrency {top}: {top} x {ours['server_cpu_ms_per_request']:.2f} ms CPU "
              f"per request / {args.workers} worker(s) = {extra['queueing_floor_ms']} ms mean latency; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes included)")
    if "shadow" in extra:
        sh = extra["shadow"]
        print(f"shadow at concurrency {sh['concurrency']} (median of {sh['rounds']} alternating rounds each): "
              f"{sh['rps_without']:.1f} -> {sh['rps_with']:.1f} req/s (ratio {sh['throughput_ratio']:.3f}), p99 "
              f"{sh['p99_without_ms']:.2f} -> {sh['p99_with_ms']:.2f} ms (ratio {sh['p99_ratio']:.3f}); challenger "
              f"v{sh['challenger']}: {sh['scored']} scored, {sh['written']} rows written, {sh['dropped']} dropped, "
              f"{sh['errors']} errors; server CPU per request {sh['cpu_ms_per_request_without']:.2f} -> "
              f"{sh['cpu_ms_per_request_with_drain']:.2f} ms (the worker's included, backlog drained: median "
              f"{sh['drain_s_median']:.1f}s after a round; SHADOW_NICE {sh['shadow_nice']}); the API process alone "
              f"{sh['api_process_cpu_ms_per_request_without']} -> {sh['api_process_cpu_ms_per_request_with']} ms")
    print("inference log: {} rows written, {} buffered, {} dropped; same predictions as mlflow: {}".format(
        extra.get("inference_log_written_rows"), extra.get("inference_log_buffer_rows"),
        extra.get("inference_log_dropped_rows"), extra.get("same_predictions_as_mlflow")))
    name = "bench_serve" if args.workers == 1 else f"bench_serve_workers{args.workers}"
    path = write_results(name, {"results": results, "targets": targets, **extra})
    print(f"results: {path}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
