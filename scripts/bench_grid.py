"""Measures WebDriver latency straight to chromedriver, through the farm broker, and through a Selenium Grid 3 hub.

usage: bench_grid.py [--caps JSON] [--command SUFFIX] RUNS SESSIONS COMMANDS NAME=URL ...   (the first NAME is the direct baseline)
--caps: the alwaysMatch capabilities of every new session (default: headless Chromium);
--command: the timed GET, /session/ID/SUFFIX (default: title).
After one unmeasured warm-up round (every target warm: JIT, pools), per run: SESSIONS rounds of one new session per target (POST /session, timed, then DELETE), then
one session per target and COMMANDS `GET /session/ID/title` (or --command) per target over one
keep-alive connection each, in rounds of BATCH commands per target. Targets take turns within every
round, so the machine's drift (it is shared and noisy) hits them alike. Prints p50s per run, the
added latency of each proxy per run (its p50 minus the baseline's in the same run), medians over
runs, and the ratio between the proxies' added latencies.
"""
import base64
import http.client
import json
import statistics
import sys
import time
import urllib.parse

CAPS = {"capabilities": {"alwaysMatch": {
    "browserName": "chrome",
    "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]},
}}}
COMMAND = "title"


class Target:
    def __init__(self, spec):
        name, url = spec.split("=", 1)
        self.name = name
        parsed = urllib.parse.urlparse(url)
        self.host, self.port, self.base = parsed.hostname, parsed.port, parsed.path.rstrip("/")
        self.headers = {"content-type": "application/json; charset=utf-8"}
        if parsed.username:
            cred = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
            self.headers["authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, self.base + path, body=data, headers=self.headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{self.name} {method} {path}: {resp.status} {payload[:300]!r}")
        return json.loads(payload) if payload else None

    def new_session(self):
        v = self.call("POST", "/session", CAPS)
        if v is None:
            raise RuntimeError(f"{self.name} POST /session: empty answer")
        return v["value"]["sessionId"] if "sessionId" in v.get("value", {}) else v["sessionId"]


def p50(xs):
    return statistics.median(xs)


BATCH = 20


def run(targets, sessions, commands):
    """One run: per target, the p50 of new-session and of command latency (ms)."""
    created = {t.name: [] for t in targets}
    for _ in range(sessions):
        for t in targets:
            start = time.perf_counter()
            sid = t.new_session()
            created[t.name].append((time.perf_counter() - start) * 1000)
            t.call("DELETE", f"/session/{sid}")
    sids = {t.name: t.new_session() for t in targets}
    for t in targets:
        t.call("GET", f"/session/{sids[t.name]}/{COMMAND}")  # warm
    took = {t.name: [] for t in targets}
    done = 0
    while done < commands:
        n = min(BATCH, commands - done)
        for t in targets:
            path = f"/session/{sids[t.name]}/{COMMAND}"
            for _ in range(n):
                start = time.perf_counter()
                t.call("GET", path)
                took[t.name].append((time.perf_counter() - start) * 1000)
        done += n
    for t in targets:
        t.call("DELETE", f"/session/{sids[t.name]}")
    return {t.name: (p50(created[t.name]), p50(took[t.name])) for t in targets}


def main():
    global CAPS
    global COMMAND
    argv = sys.argv[1:]
    while argv[:1] in (["--caps"], ["--command"]):
        if argv[0] == "--caps":
            CAPS = {"capabilities": {"alwaysMatch": json.loads(argv[1])}}
        else:
            COMMAND = argv[1]
        argv = argv[2:]
    runs, sessions, commands = (int(a) for a in argv[:3])
    targets = [Target(s) for s in argv[3:]]
    base = targets[0].name
    results = {t.name: [] for t in targets}
    # One unmeasured round first: every target warm (JIT, connection pools, caches).
    run(targets, min(sessions, 10), min(commands, 100))
    for r in range(runs):
        res = run(targets, sessions, commands)
        for t in targets:
            ns, cmd = res[t.name]
            results[t.name].append((ns, cmd))
            line = f"run {r + 1} {t.name:8s} new-session p50 {ns:8.2f} ms   command p50 {cmd:7.3f} ms"
            if t.name != base:
                line += f"   added {ns - res[base][0]:+7.2f} / {cmd - res[base][1]:+7.3f} ms"
            print(line, flush=True)
    med = {n: (p50([x[0] for x in v]), p50([x[1] for x in v])) for n, v in results.items()}
    # Added latency: per run (same moment, same machine state), then the median over runs.
    added = {
        n: tuple(p50([v[r][i] - results[base][r][i] for r in range(runs)]) for i in (0, 1))
        for n, v in results.items() if n != base
    }
    print(f"\nmedians over {runs} runs ({sessions} new sessions, {commands} commands per run and target):")
    for n, (ns, cmd) in med.items():
        line = f"  {n:8s} new-session {ns:8.2f} ms   command {cmd:7.3f} ms"
        if n != base:
            line += f"   added: new-session {added[n][0]:+8.2f} ms, command {added[n][1]:+7.3f} ms"
        print(line)
    names = [t.name for t in targets[1:]]
    if len(names) == 2:
        a, b = names

        def ratio(i):
            ours, theirs = added[a][i], added[b][i]
            if ours <= 0:
                return f"{a} adds nothing measurable ({ours:+.3f} ms), {b} adds {theirs:+.3f} ms"
            return f"1:{theirs / ours:.1f}"
        print(f"\nratio added latency {a}:{b}: command {ratio(1)}; new-session {ratio(0)}")


if __name__ == "__main__":
    main()
