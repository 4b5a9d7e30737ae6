"""Measures WebDriver latency straight to chromedriver, through the farm broker, and through a Selenium Grid 3 hub.

usage: bench_grid.py [--caps JSON] [--command SUFFIX] RUNS SESSIONS COMMANDS NAME=URL ...   (the first NAME is the direct baseline)
--caps: the alwaysMatch capabilities of every new session (default: headless Chromium);
--command: the timed GET, /session/ID/SUFFIX (default: title).
Per run and target: SESSIONS new sessions (POST /session, timed, then DELETE), then COMMANDS
`GET /session/ID/title` (or --command) on one session over one keep-alive connection. Prints p50s per run,
medians over runs, the added latency versus the baseline and the ratio between the proxies.
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


def run(target, sessions, commands):
    created = []
    for _ in range(sessions):
        t = time.perf_counter()
        sid = target.new_session()
        created.append((time.perf_counter() - t) * 1000)
        target.call("DELETE", f"/session/{sid}")
    sid = target.new_session()
    target.call("GET", f"/session/{sid}/{COMMAND}")  # warm
    took = []
    for _ in range(commands):
        t = time.perf_counter()
        target.call("GET", f"/session/{sid}/{COMMAND}")
        took.append((time.perf_counter() - t) * 1000)
    target.call("DELETE", f"/session/{sid}")
    return p50(created), p50(took)


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
    results = {t.name: [] for t in targets}
    for r in range(runs):
        for t in targets:  # interleaved, so drift hits every target alike
            ns, cmd = run(t, sessions, commands)
            results[t.name].append((ns, cmd))
            print(f"run {r + 1} {t.name:8s} new-session p50 {ns:8.2f} ms   command p50 {cmd:7.3f} ms", flush=True)
    med = {n: (p50([x[0] for x in v]), p50([x[1] for x in v])) for n, v in results.items()}
    base = targets[0].name
    print(f"\nmedians over {runs} runs ({sessions} new sessions, {commands} commands per run and target):")
    for n, (ns, cmd) in med.items():
        line = f"  {n:8s} new-session {ns:8.2f} ms   command {cmd:7.3f} ms"
        if n != base:
            line += f"   added: new-session {ns - med[base][0]:+8.2f} ms, command {cmd - med[base][1]:+7.3f} ms"
        print(line)
    names = [t.name for t in targets[1:]]
    if len(names) == 2:
        a, b = names
        def ratio(i):
            ours, theirs = med[a][i] - med[base][i], med[b][i] - med[base][i]
            if ours <= 0:
                return f"{a} adds nothing measurable ({ours:+.3f} ms), {b} adds {theirs:+.3f} ms"
            return f"1:{theirs / ours:.1f}"
        print(f"\nratio added latency {a}:{b}: command {ratio(1)}; new-session {ratio(0)}")


if __name__ == "__main__":
    main()
