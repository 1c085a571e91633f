#!/usr/bin/env python3
"""Driver of benches/proxy.sh (run that, not this): starts the emulator,
mdgate and nginx pinned to SERVER_CPU, measures memory with idle TLS
keep-alive connections, then runs oha (pinned to LOADGEN_CPU) against each
target for each request and load mode, recording CPU time per process from
/proc, and writes results.json and results.md under OUT.

Only the standard library is used. Subcommands: `hold ...` is the idle
connection holder the driver starts as a subprocess; `accounts BASE PW`
sets up the linked doctor and patient (for benches/profile.sh); `report
results.json` prints the tables again.
"""

import collections
import json
import math
import os
import platform
import re
import secrets
import select
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request

HOST = "bench.mdgate.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env(name, default=None):
    v = os.environ.get(name)
    return default if v is None or v == "" else v


def log(msg):
    print(f"[proxy_bench] {msg}", file=sys.stderr, flush=True)


# --- /proc readers ----------------------------------------------------------

def proc_cpu_ticks(pid, user_only=False):
    """utime + stime (or utime alone) of a process, all its threads, in
    clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + (0 if user_only else int(rest[12]))


def proc_sched_ns(pid):
    """Sum of the on-CPU time of the threads of a process, in ns."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def proc_ctxt_switches(pid):
    """Voluntary + involuntary context switches of all threads of a process."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def proc_status_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def proc_pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if ppid == pid:
            out.append(int(d))
    return sorted(out)


def core_times():
    """{cpu index: (busy ticks, total ticks)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+)\s+(.*)", line)
            if not m:
                continue
            v = [int(x) for x in m.group(2).split()]
            idle = v[3] + v[4]  # idle + iowait
            total = sum(v[:8])  # guest time is already inside user
            out[int(m.group(1))] = (total - idle, total)
    return out


def core_busy(a, b, cpu):
    db = b[cpu][0] - a[cpu][0]
    dt = b[cpu][1] - a[cpu][1]
    return db / dt if dt else 0.0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --- small HTTP helpers -----------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def api(base, method, path, body=None, cookie=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if cookie:
        req.add_header("Cookie", cookie)
    with urllib.request.urlopen(req, timeout=10) as r:
        sc = r.headers.get("Set-Cookie")
        return r.status, r.read(), (sc.split(";")[0] if sc else None)


def setup_accounts(base, admin_pw):
    """A doctor linked to a patient, through the emulator's own API: returns
    (patient id, the doctor's session cookie)."""
    _, _, admin = api(base, "POST", "/api/login", {"username": "admin", "password": admin_pw})
    api(base, "POST", "/api/admin/doctor",
        {"username": "bench-doctor", "password": "pw", "firstName": "Bench", "lastName": "Doctor"},
        cookie=admin)
    api(base, "POST", "/api/patient/signup",
        {"username": "bench-patient", "password": "pw", "firstName": "Bench",
         "lastName": "Patient", "telephoneNumber": "+15550000000"})
    _, body, patient = api(base, "POST", "/api/login", {"username": "bench-patient", "password": "pw"})
    patient_id = json.loads(body)["id"]
    _, body, _ = api(base, "GET", "/api/patient/code", cookie=patient)
    code = json.loads(body)["code"]
    _, _, doctor = api(base, "POST", "/api/login", {"username": "bench-doctor", "password": "pw"})
    api(base, "POST", "/api/doctor/patient/add", {"code": code}, cookie=doctor)
    status, body, _ = api(base, "GET", f"/api/doctor/patient/{patient_id}", cookie=doctor)
    if status != 200 or json.loads(body).get("id") != patient_id:
        raise RuntimeError("doctor could not read the linked patient")
    return patient_id, doctor


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def read_response(sock):
    """Reads one Content-Length framed HTTP/1.1 response; returns
    (status, headers dict lower-case, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed inside the body")
        body += chunk
    return status, headers, body


def raw_request(path, host_header, headers):
    lines = [f"GET {path} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- the idle connection holder (a subprocess pinned to LOADGEN_CPU) --------

def hold_main(argv):
    port, n, path, cafile = int(argv[0]), int(argv[1]), argv[2], argv[3]
    headers = json.loads(argv[4])
    ctx = tls_context(cafile)
    req = raw_request(path, f"{HOST}:{port}", headers)
    socks = []
    failures = 0
    for _ in range(n):
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname=HOST)
            s.sendall(req)
            status, _, _ = read_response(s)
            if status != 200:
                failures += 1
            socks.append(s)
        except OSError as e:
            failures += 1
            print(f"hold: {e}", file=sys.stderr)
    print(json.dumps({"open": len(socks), "failures": failures}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            closed = 0
            for s in socks:
                r, _, _ = select.select([s], [], [], 0)
                if r or s.pending():
                    s.setblocking(False)
                    try:
                        if s.recv(1) == b"":
                            closed += 1
                    except ssl.SSLWantReadError:
                        pass
                    except OSError:
                        closed += 1
                    s.setblocking(True)
            print(json.dumps({"still_open": len(socks) - closed}), flush=True)
        elif cmd == "close":
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass
            print(json.dumps({"closed": len(socks)}), flush=True)
            return


# --- the driver -------------------------------------------------------------

class Bench:
    def __init__(self):
        self.work = env("WORK")
        self.out = os.path.abspath(env("OUT"))
        self.oha = env("OHA")
        self.nginx_bin = env("NGINX", "/usr/sbin/nginx")
        self.mdgate_bin = env("MDGATE_BIN")
        self.emulator_bin = env("EMULATOR_BIN")
        self.duration = float(env("DURATION", "10"))
        self.warmup = float(env("WARMUP", "3"))
        self.rates = [int(r) for r in env("RATES", "1000 5000").split()]
        self.sat_conns = int(env("SAT_CONNS", "32"))
        self.rate_conns = int(env("RATE_CONNS", "16"))
        self.idle_conns = int(env("IDLE_CONNS", "1000"))
        self.rounds = int(env("ROUNDS", "1"))
        self.targets = env("TARGETS", "direct mdgate nginx").split()
        self.requests = env("REQUESTS", "codes patient").split()
        self.lg_cpu = int(env("LOADGEN_CPU", "0"))
        self.srv_cpu = int(env("SERVER_CPU", "1"))
        self.oha_threads = int(env("OHA_THREADS", "2"))
        self.quiet_max = float(env("QUIET_MAX", "300"))
        self.quiet_busy = float(env("QUIET_BUSY", "10")) / 100
        self.retries = int(env("RETRIES", "3"))
        self.foreign_max = float(env("FOREIGN_MAX", "5")) / 100
        self.procs = {}
        self.results = {"phases": [], "memory": {}, "checks": []}

    # processes
    def start(self, name, argv, **kw):
        cmd = ["taskset", "-c", str(self.srv_cpu)] + argv
        logf = open(os.path.join(self.work, f"{name}.log"), "wb")
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, **kw)
        self.procs[name] = p
        return p

    def stop_all(self):
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if name != "nginx" else signal.SIGQUIT)
        for name, p in self.procs.items():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def pids(self, target):
        """The processes whose CPU counts as the proxy of a target."""
        if target == "mdgate":
            return [self.procs["mdgate"].pid]
        if target == "nginx":
            master = self.procs["nginx"].pid
            return [master] + children_of(master)
        return []

    def emulator_pid(self):
        return self.procs["emulator"].pid

    def setup(self):
        self.emu_port = free_port()
        self.admin_pw = secrets.token_hex(8)
        self.start("emulator", [self.emulator_bin, "--listen", f"127.0.0.1:{self.emu_port}",
                                "--admin-password", self.admin_pw])
        wait_port(self.emu_port)
        self.emu_base = f"http://127.0.0.1:{self.emu_port}"
        self.patient_id, self.cookie = setup_accounts(self.emu_base, self.admin_pw)
        log(f"emulator on {self.emu_port}; patient {self.patient_id} linked to bench-doctor")

        self.ports = {"direct": self.emu_port}
        if "mdgate" in self.targets:
            port, admin = free_port(), free_port()
            self.ports["mdgate"] = port
            cfg = os.path.join(self.work, "mdgate.toml")
            with open(cfg, "w") as f:
                f.write(f"""[server]
fqdn = "{HOST}"
[upstream]
url = "http://127.0.0.1:{self.emu_port}"
[public]
listen = "127.0.0.1:{port}"
[public.tls]
cert_file = "{self.work}/leaf.crt"
key_file = "{self.work}/leaf.key"
[admin]
listen = "127.0.0.1:{admin}"
[store]
path = "{self.work}/mdgate.db"
[log]
filter = "warn"
[runtime]
workers = 1
""")
            self.start("mdgate", [self.mdgate_bin, "serve", "-c", cfg])
            end = time.time() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > end or self.procs["mdgate"].poll() is not None:
                    raise RuntimeError("mdgate did not become ready; see mdgate.log in " + self.work)
                time.sleep(0.1)
        if "nginx" in self.targets:
            port = free_port()
            self.ports["nginx"] = port
            ndir = os.path.join(self.work, "nginx")
            os.makedirs(ndir, exist_ok=True)
            os.chmod(ndir, 0o755)
            here = os.path.dirname(os.path.abspath(__file__))
            with open(os.path.join(here, "nginx.conf.in")) as f:
                conf = f.read()
            conf = (conf.replace("@WORK@", self.work).replace("@EMU_PORT@", str(self.emu_port))
                    .replace("@NGINX_PORT@", str(port))
                    .replace("@ACCESS_LOG@", f"access_log {ndir}/access.log;" if env("NGINX_ACCESS_LOG")
                             else "access_log off;"))
            cpath = os.path.join(ndir, "nginx.conf")
            with open(cpath, "w") as f:
                f.write(conf)
            self.start("nginx", [self.nginx_bin, "-p", ndir, "-c", cpath, "-e", "stderr"])
            wait_port(port)
            time.sleep(0.3)  # the worker forks after the listener opens
        # The idle RSS right after start, before any proxied request.
        for t in ("mdgate", "nginx"):
            if t in self.targets:
                self.results["memory"].setdefault(t, {})["rss_after_start_kib"] = sum(
                    proc_status_kib(p) for p in self.pids(t))

    # request definitions
    def request(self, name):
        if name == "codes":
            return "/api/symptom/codes", [("Accept-Encoding", "gzip")]
        if name == "patient":
            return f"/api/doctor/patient/{self.patient_id}", [
                ("Accept-Encoding", "gzip"), ("Cookie", self.cookie)]
        raise ValueError(name)

    def url(self, target, path):
        if target == "direct":
            return f"http://127.0.0.1:{self.emu_port}{path}", []
        port = self.ports[target]
        return f"https://{HOST}:{port}{path}", [
            "--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", "--cacert", f"{self.work}/ca.crt"]

    def check(self):
        """One request per target and kind: status, size, and the headers a
        proxy adds, so a broken setup stops the run early."""
        ctx = tls_context(f"{self.work}/ca.crt")
        for rq in self.requests:
            path, headers = self.request(rq)
            sizes = {}
            for t in self.targets:
                raw = socket.create_connection(("127.0.0.1", self.ports[t]), timeout=5)
                s = raw if t == "direct" else ctx.wrap_socket(raw, server_hostname=HOST)
                host = f"127.0.0.1:{self.emu_port}" if t == "direct" else f"{HOST}:{self.ports[t]}"
                s.sendall(raw_request(path, host, headers))
                status, h, body = read_response(s)
                tls = s.version() if t != "direct" else None
                cipher = s.cipher()[0] if t != "direct" else None
                s.close()
                row = {"target": t, "request": rq, "status": status, "bytes": len(body),
                       "content_encoding": h.get("content-encoding"),
                       "x_request_id": "x-request-id" in h, "tls": tls, "cipher": cipher}
                self.results["checks"].append(row)
                sizes[t] = len(body)
                if status != 200:
                    raise RuntimeError(f"check failed: {row}")
            if len(set(sizes.values())) != 1:
                raise RuntimeError(f"bodies differ between targets for {rq}: {sizes}")
        log("checks passed: " + json.dumps(self.results["checks"]))

    def wait_quiet(self):
        """Waits until both cores are idle apart from us (others' builds)."""
        start = time.time()
        while True:
            a = core_times()
            time.sleep(1)
            b = core_times()
            busy = {c: core_busy(a, b, c) for c in (self.lg_cpu, self.srv_cpu)}
            if max(busy.values()) <= self.quiet_busy or time.time() - start >= self.quiet_max:
                return time.time() - start, busy
            log(f"cores busy before a phase ({busy}, load {loadavg()}); waiting")
            time.sleep(4)

    def sample(self, groups):
        return {
            "t": time.monotonic(),
            "cores": core_times(),
            "ticks": {g: sum(proc_cpu_ticks(p) for p in pids) for g, pids in groups.items()},
            "uticks": {g: sum(proc_cpu_ticks(p, True) for p in pids) for g, pids in groups.items()},
            "csw": {g: sum(proc_ctxt_switches(p) for p in pids) for g, pids in groups.items()},
            "sched": {g: sum(proc_sched_ns(p) for p in pids) for g, pids in groups.items()},
        }

    def phase(self, rnd, target, rq, mode, conns, rate):
        waited, pre_busy = self.wait_quiet()
        path, headers = self.request(rq)
        url, extra = self.url(target, path)
        tag = f"r{rnd}-{target}-{rq}-{mode}"
        db = os.path.join(self.out, f"{tag}.db")
        js = os.path.join(self.out, f"{tag}.json")
        for f in (db, js):
            if os.path.exists(f):
                os.remove(f)
        total = self.warmup + self.duration + 0.5
        cmd = ["taskset", "-c", str(self.lg_cpu), self.oha, "--no-tui", "--output-format", "json",
               "-o", js, "--db-url", db, "-z", f"{total}s", "-c", str(conns),
               "--worker-threads", str(self.oha_threads)]
        if rate:
            cmd += ["-q", str(rate), "--latency-correction"]
        for k, v in headers:
            cmd += ["-H", f"{k}: {v}"]
        cmd += extra + [url]
        load = loadavg()
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.load_procs = [p]
        groups = {"proxy": self.pids(target), "emulator": [self.emulator_pid()], "oha": [p.pid]}
        time.sleep(max(0.0, t0 + self.warmup - time.monotonic()))
        s1 = self.sample(groups)
        time.sleep(max(0.0, t0 + self.warmup + self.duration - time.monotonic()))
        s2 = self.sample(groups)
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"oha failed ({p.returncode}): {err.decode(errors='replace')}")
        w0, w1 = s1["t"] - t0, s2["t"] - t0
        con = sqlite3.connect(db)
        rows = con.execute(
            "SELECT start, start_latency_correction, end, status FROM oha WHERE end > ? AND end <= ?",
            (w0, w1)).fetchall()
        con.close()
        with open(js) as f:
            summary = json.load(f)
        n = len(rows)
        window = w1 - w0
        lat = sorted(r[2] - r[0] for r in rows if r[0] >= w0)
        corr = sorted(r[2] - r[1] for r in rows if r[0] >= w0 and r[1] is not None)
        statuses = collections.Counter(r[3] for r in rows)
        errors = {k: v for k, v in summary.get("errorDistribution", {}).items()
                  if k != "aborted due to deadline"}

        def pct(xs, q):
            if not xs:
                return None
            return round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))] * 1e6, 1)

        res = {
            "round": rnd, "target": target, "request": rq, "mode": mode, "conns": conns,
            "rate": rate, "window_s": round(window, 3), "requests": n,
            "rps": round(n / window, 1), "statuses": dict(statuses), "errors": errors,
            "oha_status_all": summary.get("statusCodeDistribution", {}),
            "lat_us": {q: pct(lat, v) for q, v in
                       (("p50", .5), ("p90", .9), ("p99", .99), ("p99.9", .999), ("max", 1.0))},
            "lat_corrected_us": ({q: pct(corr, v) for q, v in (("p50", .5), ("p99", .99), ("p99.9", .999))}
                                 if corr else None),
            "cpu_s": {g: (s2["ticks"][g] - s1["ticks"][g]) / CLK_TCK for g in groups},
            "cpu_user_s": {g: (s2["uticks"][g] - s1["uticks"][g]) / CLK_TCK for g in groups},
            "ctxt_switches": {g: s2["csw"][g] - s1["csw"][g] for g in groups},
            "cpu_sched_s": {g: (s2["sched"][g] - s1["sched"][g]) / 1e9 for g in groups},
            "core_busy": {"loadgen": round(core_busy(s1["cores"], s2["cores"], self.lg_cpu), 3),
                          "server": round(core_busy(s1["cores"], s2["cores"], self.srv_cpu), 3)},
            "loadavg": load, "quiet_wait_s": round(waited, 1),
            "busy_before": {str(k): round(v, 3) for k, v in pre_busy.items()},
        }
        res["cpu_us_per_req"] = {g: (round(v / n * 1e6, 1) if n else None)
                                 for g, v in res["cpu_s"].items()}
        res["ctxt_switches_per_req"] = {g: (round(v / n, 3) if n else None)
                                         for g, v in res["ctxt_switches"].items()}
        res["cpu_sched_us_per_req"] = {g: (round(v / n * 1e6, 1) if n else None)
                                       for g, v in res["cpu_sched_s"].items()}
        ours = res["cpu_s"]["proxy"] + res["cpu_s"]["emulator"]
        res["foreign_srv_core"] = round(res["core_busy"]["server"] - ours / window, 3)
        res["foreign_lg_core"] = round(res["core_busy"]["loadgen"] - res["cpu_s"]["oha"] / window, 3)
        self.results["phases"].append(res)
        log(f"{tag}: {res['rps']} req/s, proxy {res['cpu_us_per_req']['proxy']} µs/req, "
            f"emu {res['cpu_us_per_req']['emulator']}, oha {res['cpu_us_per_req']['oha']}, "
            f"p50/p99 {res['lat_us']['p50']}/{res['lat_us']['p99']} µs, statuses {dict(statuses)}, "
            f"errors {errors}, cores {res['core_busy']}, load {load}")
        return res

    def phase_clean(self, rnd, target, rq, mode, conns, rate):
        """Runs a phase again (up to RETRIES times) when other processes used
        more than FOREIGN_MAX of either core during its window; the
        discarded attempts stay in results.json, marked."""
        for attempt in range(self.retries + 1):
            res = self.phase(rnd, target, rq, mode, conns, rate)
            res["attempt"] = attempt
            foreign = max(res["foreign_srv_core"], res["foreign_lg_core"])
            if foreign <= self.foreign_max:
                return res
            if attempt < self.retries:
                res["discarded"] = True
                log(f"foreign load {foreign:.0%} during the window: running the phase again")
        res["noisy"] = True
        return res

    def memory(self, target):
        path, headers = self.request(env("IDLE_REQUEST", "patient"))
        pids = self.pids(target)
        m = self.results["memory"].setdefault(target, {})
        time.sleep(1)
        before = sum(proc_status_kib(p) for p in pids)
        before_pss = [proc_pss_kib(p) for p in pids]
        cmd = ["taskset", "-c", str(self.lg_cpu), sys.executable, os.path.abspath(__file__), "hold",
               str(self.ports[target]), str(self.idle_conns), path, f"{self.work}/ca.crt",
               json.dumps(headers)]
        t0 = time.monotonic()
        h = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        opened = json.loads(h.stdout.readline())
        open_s = time.monotonic() - t0
        time.sleep(1)
        held = sum(proc_status_kib(p) for p in pids)
        held_pss = [proc_pss_kib(p) for p in pids]
        h.stdin.write("check\n")
        h.stdin.flush()
        still = json.loads(h.stdout.readline())["still_open"]
        h.stdin.write("close\n")
        h.stdin.flush()
        h.stdout.readline()
        h.wait()
        time.sleep(2)
        after = sum(proc_status_kib(p) for p in pids)
        m.update({
            "rss_before_kib": before, "pss_before_kib": before_pss,
            "idle_conns": self.idle_conns, "opened": opened["open"], "open_failures": opened["failures"],
            "open_seconds": round(open_s, 2), "still_open_at_measure": still,
            "rss_held_kib": held, "pss_held_kib": held_pss,
            "kib_per_conn": round((held - before) / max(1, opened["open"]), 1),
            "rss_after_close_kib": after,
        })
        log(f"memory {target}: {m}")

    def versions(self):
        def run(cmd):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
                return (r.stdout + r.stderr).strip()
            except OSError as e:
                return f"unavailable: {e}"
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return {
            "nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
            "mem_total": run(["sh", "-c", "grep MemTotal /proc/meminfo"]),
            "mdgate_commit": run(["git", "-C", repo, "rev-parse", "HEAD"]),
            "mdgate_dirty": run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"]) != "",
            "rustc": run(["rustc", "--version"]),
            "nginx": run([self.nginx_bin, "-V"]).splitlines()[:2],
            "openssl_cli": run(["openssl", "version"]),
            "oha": run([self.oha, "--version"]),
            "python_ssl": ssl.OPENSSL_VERSION,
        }

    def run(self):
        os.makedirs(self.out, exist_ok=True)
        self.results["machine"] = self.versions()
        self.results["knobs"] = {k: os.environ.get(k) for k in (
            "DURATION", "WARMUP", "RATES", "SAT_CONNS", "RATE_CONNS", "IDLE_CONNS", "ROUNDS",
            "RETRIES", "FOREIGN_MAX", "NGINX_ACCESS_LOG", "TARGETS", "REQUESTS", "LOADGEN_CPU", "SERVER_CPU", "OHA_THREADS", "QUIET_MAX", "QUIET_BUSY")}
        self.results["loadavg_start"] = loadavg()
        try:
            self.setup()
            self.check()
            for t in ("mdgate", "nginx"):
                if t in self.targets:
                    self.memory(t)
            modes = [("sat", self.sat_conns, None)] + [(f"q{r}", self.rate_conns, r) for r in self.rates]
            for rnd in range(1, self.rounds + 1):
                for rq in self.requests:
                    for mode, conns, rate in modes:
                        for t in self.targets:
                            self.phase_clean(rnd, t, rq, mode, conns, rate)
            for t in ("mdgate", "nginx"):
                if t in self.targets:
                    self.results["memory"][t]["rss_after_load_kib"] = sum(
                        proc_status_kib(p) for p in self.pids(t))
        finally:
            self.results["loadavg_end"] = loadavg()
            self.stop_all()
            for p in getattr(self, "load_procs", []):
                if p.poll() is None:
                    p.kill()
            with open(os.path.join(self.out, "results.json"), "w") as f:
                json.dump(self.results, f, indent=1)
        md = report(self.results)
        with open(os.path.join(self.out, "results.md"), "w") as f:
            f.write(md)
        print(md)


# --- the report --------------------------------------------------------------

def median_phase(phases):
    """Medians over rounds of the figures the tables show."""
    def med(get):
        xs = [get(p) for p in phases]
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None
    p0 = phases[0]
    return {
        "rps": med(lambda p: p["rps"]),
        "rps_range": (min(p["rps"] for p in phases), max(p["rps"] for p in phases)),
        "proxy_us": med(lambda p: p["cpu_us_per_req"]["proxy"] if p["target"] != "direct" else None),
        "proxy_sched_us": med(lambda p: p["cpu_sched_us_per_req"]["proxy"] if p["target"] != "direct" else None),
        "proxy_user_us": med(lambda p: p["cpu_user_s"]["proxy"] / p["requests"] * 1e6
                             if p["target"] != "direct" and "cpu_user_s" in p and p["requests"] else None),
        "emu_us": med(lambda p: p["cpu_us_per_req"]["emulator"]),
        "oha_us": med(lambda p: p["cpu_us_per_req"]["oha"]),
        "lg_busy": med(lambda p: p["core_busy"]["loadgen"]),
        "srv_busy": med(lambda p: p["core_busy"]["server"]),
        "foreign": med(lambda p: p["foreign_srv_core"]),
        "p50": med(lambda p: p["lat_us"]["p50"]),
        "p99": med(lambda p: p["lat_us"]["p99"]),
        "p999": med(lambda p: p["lat_us"]["p99.9"]),
        "c99": med(lambda p: (p["lat_corrected_us"] or {}).get("p99")),
        "c999": med(lambda p: (p["lat_corrected_us"] or {}).get("p99.9")),
        "non200": sum(sum(v for k, v in p["statuses"].items() if str(k) != "200") for p in phases),
        "errors": sum(sum(p["errors"].values()) for p in phases),
        "n": sum(p["requests"] for p in phases),
        "rounds": len(phases),
        "noisy": sum(1 for p in phases if p.get("noisy")),
        "target": p0["target"],
    }


def paired_deltas(phases, rq, mode, target, q):
    """Latency quantile q of a target minus direct's, paired by round (the
    two ran a few seconds apart): (median, min, max) over rounds, or None.
    Pairs with a phase still noisy after its retries are left out when a
    clean pair exists."""
    keep = [p for p in phases if not p.get("discarded") and p["request"] == rq and p["mode"] == mode]
    direct = {p["round"]: p for p in keep if p["target"] == "direct"}
    pairs = [(p, direct[p["round"]]) for p in keep if p["target"] == target and p["round"] in direct]
    clean = [(a, b) for a, b in pairs if not a.get("noisy") and not b.get("noisy")]
    ds = [a["lat_us"][q] - b["lat_us"][q] for a, b in (clean or pairs)]
    if not ds:
        return None
    return statistics.median(ds), min(ds), max(ds)


def fmt_delta(d):
    if d is None:
        return "–"
    med, lo, hi = d
    return f"{med:+.0f} ({lo:+.0f}…{hi:+.0f})" if lo != hi else f"{med:+.0f}"


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def report(r):
    by = collections.defaultdict(list)
    for p in r["phases"]:
        if not p.get("discarded"):
            by[(p["request"], p["mode"], p["target"])].append(p)
    agg = {k: median_phase(v) for k, v in by.items()}
    reqs = list(dict.fromkeys(p["request"] for p in r["phases"]))
    modes = list(dict.fromkeys(p["mode"] for p in r["phases"]))
    targets = list(dict.fromkeys(p["target"] for p in r["phases"]))
    k = r.get("knobs", {})
    out = []
    m = r.get("machine", {})
    out.append(f"Machine: {m.get('nproc')} CPUs, {m.get('cpu_model')}, kernel {m.get('kernel')}; "
               f"load {r.get('loadavg_start')} at start, {r.get('loadavg_end')} at end.")
    out.append(f"mdgate {m.get('mdgate_commit', '')[:12]}{' (dirty)' if m.get('mdgate_dirty') else ''}; "
               f"{'; '.join(m.get('nginx', []))}; {m.get('oha')}.")
    out.append(f"Window {k.get('DURATION')} s after {k.get('WARMUP')} s warm-up per phase; "
               f"{k.get('ROUNDS')} round(s), medians shown. CPU µs/req = (utime+stime of the process "
               f"group over the window) / requests completed in the window. A phase during which other "
               f"processes used more than {k.get('FOREIGN_MAX') or 5}% of a core is run again (up to "
               f"{k.get('RETRIES') or 3} times); † marks figures that include a phase still noisy after that. "
               f"Latency deltas are taken per round against the direct phase run just before, then the "
               f"median (and range) over rounds.")
    out.append("")
    for rq in reqs:
        sat = [m for m in modes if m == "sat"]
        for mode in sat:
            out.append(f"### `{rq}`: saturated, {by[(rq, mode, targets[0])][0]['conns']} keep-alive connections")
            out.append("")
            out.append("| target | req/s (min–max) | proxy CPU µs/req (user) | emulator µs/req | oha µs/req "
                       "| oha core busy | server core busy (foreign) | p50 µs | p99 µs | non-200 / errors |")
            out.append("|---|---|---|---|---|---|---|---|---|---|")
            for t in targets:
                a = agg.get((rq, mode, t))
                if not a:
                    continue
                lo, hi = a["rps_range"]
                out.append(
                    f"| {t}{' †' * bool(a['noisy'])} | {fmt(a['rps'])} ({fmt(lo)}–{fmt(hi)}) | {fmt(a['proxy_us'], 1)} ({fmt(a['proxy_user_us'], 1)}) "
                    f"| {fmt(a['emu_us'], 1)} | {fmt(a['oha_us'], 1)} | {fmt(a['lg_busy'] * 100)}% "
                    f"| {fmt(a['srv_busy'] * 100)}% ({fmt(a['foreign'] * 100)}%) | {fmt(a['p50'])} | {fmt(a['p99'])} "
                    f"| {a['non200']} / {a['errors']} |")
            md, ng = agg.get((rq, mode, "mdgate")), agg.get((rq, mode, "nginx"))
            if md and ng:
                out.append("")
                out.append(f"mdgate / nginx: throughput **{md['rps'] / ng['rps']:.2f}×**, "
                           f"proxy CPU per request **{md['proxy_us'] / ng['proxy_us']:.2f}×**.")
            out.append("")
        rmodes = [m for m in modes if m != "sat"]
        if rmodes:
            out.append(f"### `{rq}`: fixed rates, {by[(rq, rmodes[0], targets[0])][0]['conns']} keep-alive connections")
            out.append("")
            out.append("| rate | target | achieved req/s | p50 µs | p99 µs | p99.9 µs | Δp50 vs direct (range) | Δp99 vs direct (range) "
                       "| p99 / p99.9 corrected µs | proxy CPU µs/req (user) | emulator µs/req | non-200 / errors |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for mode in rmodes:
                d = agg.get((rq, mode, "direct"))
                for t in targets:
                    a = agg.get((rq, mode, t))
                    if not a:
                        continue
                    dp50 = fmt_delta(paired_deltas(r["phases"], rq, mode, t, "p50")) if t != "direct" else "–"
                    dp99 = fmt_delta(paired_deltas(r["phases"], rq, mode, t, "p99")) if t != "direct" else "–"
                    out.append(
                        f"| {mode[1:]} | {t}{' †' * bool(a['noisy'])} | {fmt(a['rps'])} | {fmt(a['p50'])} | {fmt(a['p99'])} | {fmt(a['p999'])} "
                        f"| {dp50} | {dp99} | {fmt(a['c99'])} / {fmt(a['c999'])} | {fmt(a['proxy_us'], 1)} ({fmt(a['proxy_user_us'], 1)}) "
                        f"| {fmt(a['emu_us'], 1)} | {a['non200']} / {a['errors']} |")
            out.append("")
    mem = r.get("memory", {})
    if mem:
        out.append("### Memory")
        out.append("")
        out.append("| proxy | RSS after start | RSS before idle conns | RSS with N idle TLS conns (still open) "
                   "| KiB per idle conn | PSS before → held | RSS after close | RSS after the load phases |")
        out.append("|---|---|---|---|---|---|---|---|")
        for t, v in mem.items():
            out.append(
                f"| {t} | {fmt(v.get('rss_after_start_kib', 0) / 1024, 1)} MiB | {fmt(v.get('rss_before_kib', 0) / 1024, 1)} MiB "
                f"| {fmt(v.get('rss_held_kib', 0) / 1024, 1)} MiB (N={v.get('opened')}, {v.get('still_open_at_measure')} open) "
                f"| {fmt(v.get('kib_per_conn'), 1)} "
                f"| {fmt(sum(v.get('pss_before_kib') or [0]) / 1024, 1)} → {fmt(sum(v.get('pss_held_kib') or [0]) / 1024, 1)} MiB "
                f"| {fmt(v.get('rss_after_close_kib', 0) / 1024, 1)} MiB "
                f"| {fmt(v.get('rss_after_load_kib', 0) / 1024, 1) if v.get('rss_after_load_kib') else '–'} MiB |")
        out.append("")
    # Goals.
    goals = []
    for rq in reqs:
        md, ng = agg.get((rq, "sat", "mdgate")), agg.get((rq, "sat", "nginx"))
        if md:
            goals.append((f"mdgate CPU ≤ 40 µs per proxied request (`{rq}`, saturated)",
                          md["proxy_us"] <= 40, f"{md['proxy_us']:.1f} µs"))
        if md and ng:
            ratio = md["rps"] / ng["rps"]
            goals.append((f"mdgate throughput ≥ 1.6× nginx (`{rq}`, saturated)", ratio >= 1.6,
                          f"{ratio:.2f}× ({md['rps']:,.0f} vs {ng['rps']:,.0f} req/s)"))
        for q, limit in (("p50", 100), ("p99", 200)):
            d = paired_deltas(r["phases"], rq, "q1000", "mdgate", q)
            if d:
                goals.append((f"1k req/s {q} ≤ direct + {limit} µs (`{rq}`)", d[0] <= limit,
                              f"{fmt_delta(d)} µs (median over rounds, range)"))
    mm = mem.get("mdgate")
    if mm:
        idle = mm.get("rss_after_start_kib", 0) / 1024
        goals.append(("idle RSS ≤ 20 MiB", idle <= 20, f"{idle:.1f} MiB"))
        goals.append(("≤ 50 KiB per idle TLS keep-alive connection", mm["kib_per_conn"] <= 50,
                      f"{mm['kib_per_conn']:.1f} KiB ({mm['opened']} connections)"))
    if goals:
        out.append("### Goals")
        out.append("")
        out.append("| goal | measured | |")
        out.append("|---|---|---|")
        for g, ok, v in goals:
            out.append(f"| {g} | {v} | {'met' if ok else '**not met**'} |")
        out.append("")
    return "\n".join(out)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "hold":
        hold_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "accounts":
        pid, cookie = setup_accounts(sys.argv[2], sys.argv[3])
        print(json.dumps({"patient_id": pid, "cookie": cookie}))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        with open(sys.argv[2]) as f:
            print(report(json.load(f)))
        return
    # Background shells start us with SIGINT ignored; make both signals
    # unwind through run()'s `finally`, which stops the servers.
    def stop(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    Bench().run()


if __name__ == "__main__":
    main()
