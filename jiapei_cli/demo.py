"""``jiapei demo``: the whole system on this machine — broker, server, exam simulator, a fleet of simulated cars.

Every part runs as its own process, as in production: a Mosquitto broker with the project's TLS config (a throwaway
CA made by ``jiapei pki init``, client certificates, per-terminal ACL), ``jiapei server`` (SQLite), ``jiapei sim
exam``, ``jiapei sim fleet`` (GNSS and OBD-II on pseudo-terminals, cameras over HTTP) and one ``jiapei agent run`` per
car. The demo plays the school's office (enrols people, issues each car a one-time token with which its terminal
enrols itself: ``jiapei agent enrol``) and the people in the cars (coach and student sign in by face, train, sign
out). Ctrl-C stops everything;
``--duration S`` stops after S seconds and exits 0 only if the pipeline worked end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from server.broker import init_pki, render_mosquitto_conf

log = logging.getLogger("demo")

SCHOOL = ("3711020000000001", "日照市示范驾校 Rizhao Demo Driving School")
# (coach, student) per car: demo photos shipped in simulators/data/faces (see PROVENANCE.md there).
PAIRS = [("obama", "biden"), ("kit_harington", "rose_leslie"), ("lin_manuel_miranda", "alex_lacamoire")]
# Courses each car's student trains in turn: C1 part 2 field driving on the training ground, part 3 road driving.
COURSES_GROUND = ["1212120000", "1213210000"]
COURSES_ROAD = ["1213210000", "1212120000"]
SESSION_SIM_MINUTES = 22
BREAK_SIM_MINUTES = 2
STARTUP_TIMEOUT_S = 60.0
VALID_METRIC = 'jiapei_minutes_total{verdict="valid"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} (see its log)")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port} within {timeout:.0f} s")


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("jiapei demo: the Mosquitto broker is not installed: sudo apt-get install mosquitto")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.dir = (args.data_dir / stamp).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.token = os.urandom(16).hex()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.cars: list[dict[str, Any]] = []

    # --- processes ---------------------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.dir / f"{name}.log"
        out = log_path.open("ab")
        # The admin token goes by environment, never on a command line that `ps` shows.
        env = {**os.environ, "JIAPEI_ADMIN_TOKEN": self.token}
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=env)  # fmt: skip
        self.procs.append(Proc(name, popen, log_path))
        return popen

    def jiapei(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, "-m", "jiapei_cli.main", *argv])

    def shutdown(self) -> None:
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in reversed(self.procs):
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    # --- set-up ------------------------------------------------------------------------------------------

    def start(self) -> None:
        a = self.args
        self.mqtt_port, self.exam_port = free_port(), free_port()
        self.api_port = a.api_port or free_port()
        broker_dir = self.dir / "broker"
        self.pki_dir = self.dir / "pki"
        init_pki(self.pki_dir, broker_dir, ["127.0.0.1", "localhost"])
        conf = render_mosquitto_conf(port=self.mqtt_port, bind="127.0.0.1", pki_dir=self.pki_dir,
                                     broker_dir=broker_dir, persistence=True, run_as_root=os.geteuid() == 0)
        (broker_dir / "mosquitto.conf").write_text(conf + f"log_dest file {broker_dir / 'mosquitto.log'}\n")
        broker = self.spawn("broker", [find_mosquitto(), "-c", str(broker_dir / "mosquitto.conf")])
        wait_port(self.mqtt_port, 10, broker, "mosquitto")
        # The server signs its stage reviews; the exam side is given the public key and refuses unsigned notices.
        from server.exam_client import NoticeSigner

        signer = NoticeSigner.from_file(self.pki_dir / "stage-review-signing.key")
        server_key = self.dir / "stage-review-signing.pub.pem"
        server_key.write_text(signer.public_pem)
        exam = self.jiapei("exam", "sim", "exam", "--port", str(self.exam_port), "--state-dir", str(self.dir / "exam"),
                           "--server-key", str(server_key))  # fmt: skip
        wait_port(self.exam_port, STARTUP_TIMEOUT_S, exam, "exam simulator")
        # The platform around the hours: the escrow bank simulator (its address goes to the server by environment).
        from jiapei_cli.demo_platform import DemoPlatform

        self.platform = DemoPlatform(self)
        server = self.jiapei(
            "server", "server", "--database-url", a.database_url or f"sqlite:///{self.dir / 'server.sqlite'}",
            "--mqtt-host", "127.0.0.1", "--mqtt-port", str(self.mqtt_port),
            "--exam-url", f"http://127.0.0.1:{self.exam_port}", "--policy", a.policy,
            "--api-host", "127.0.0.1", "--api-port", str(self.api_port), "--resend-grace-seconds", "10",
            "--pki-dir", str(self.pki_dir), "--broker-dir", str(broker_dir),
            "--broker-pid-file", str(broker_dir / "mosquitto.pid"),
        )  # fmt: skip
        wait_port(self.api_port, STARTUP_TIMEOUT_S, server, "server")
        fleet_file = self.dir / "fleet.json"
        fleet = self.jiapei("fleet", "sim", "fleet", "--cars", str(a.cars), "--factor", str(a.factor),
                            "--out", str(fleet_file))  # fmt: skip
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not fleet_file.exists():
            if fleet.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fleet simulator did not start (see fleet.log)")
            time.sleep(0.1)
        self.fleet = json.loads(fleet_file.read_text())
        self.enrol_people()
        self.platform.enrol_and_pay()  # each student enrols online and pays the fee into escrow
        self.national: dict[str, Any] | None = None
        if getattr(a, "national_cars", 0):
            # A car whose certified terminal speaks the national protocol (JT/T 808 + the 2016 training extension),
            # through `jiapei gateway` into the same database, rules and exam forwarding.
            from server.gateway.demo_support import start_national_car

            self.national = start_national_car(self)
        for i, car in enumerate(self.fleet["cars"]):
            self.start_agent(i, car)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}/api",
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=10)  # fmt: skip

    def enrol_people(self) -> None:
        """The school's office: enrolment photos become face templates on the server (the roster's source)."""
        from biometrics.engine import FaceEngine
        from biometrics.templates import encode_template
        from simulators.camera import load_demo_people

        people = load_demo_people()
        self.photos = people
        names = json.loads((Path(people[PAIRS[0][0]]["enrol"]).parent / "people.json").read_text())["people"]
        engine = FaceEngine()
        with self.admin() as api:
            _ok(api.post("/schools", json={"id": SCHOOL[0], "name": SCHOOL[1]}))
            for i, (coach, student) in enumerate(PAIRS[: self.args.cars]):
                for role, who in (("coach", coach), ("student", student)):
                    (template, *_) = engine.encode(engine.load_image(people[who]["enrol"]))
                    pid = f"37110200000{'002' if role == 'coach' else '001'}{i + 1:02d}"
                    body = {"id": pid, "name": names[who]["name"], "school": SCHOOL[0],
                            "face_template": encode_template(template)}  # fmt: skip
                    if role == "coach":
                        _ok(api.post("/coaches", json={**body, "classes": ["C1", "C2"]}))
                    else:
                        _ok(api.post("/students", json={**body, "class": "C1"}))
        log.info("enrolled %d coaches and %d students", self.args.cars, self.args.cars)

    def start_agent(self, i: int, car: dict[str, Any]) -> None:
        terminal = f"37100000000000{i + 1:02d}"
        data = self.dir / car["name"]
        with self.admin() as api:  # the office: a one-time token for this car
            body = {"terminal": terminal, "car_plate": f"鲁L{i + 1:04d}学", "school": SCHOOL[0], "ttl_minutes": 30,
                    "vin": car.get("vin")}  # the car's papers name its VIN: the terminal is bound to it from the start
            token = _ok(api.post("/enrolments", json=body)).json()["token"]
        # The car: keys made on the terminal, never leaving it; the token by environment, not on a command line.
        enrolment = subprocess.run(
            [sys.executable, "-m", "jiapei_cli.main", "agent", "enrol", "--data-dir", str(data), "--terminal",
             terminal, "--server", f"http://127.0.0.1:{self.api_port}"],
            capture_output=True, text=True, env={**os.environ, "JIAPEI_ENROL_TOKEN": token}, check=False,
        )  # fmt: skip
        if enrolment.returncode != 0:
            raise RuntimeError(f"terminal {terminal} could not enrol: {enrolment.stderr.strip()[-500:]}")
        web_port = free_port()
        proc = self.jiapei(
            f"agent-{car['name']}", "agent", "run", "--data-dir", str(data), "--terminal", terminal,
            "--gps", car["gps"], "--vehicle", car["vehicle"], "--camera", car["camera"],
            "--web-port", str(web_port), "--recheck-minutes", "15",
            # Five of the six demo people are still photos (only one has a video): liveness is measured and
            # signed but not decisive here. A real terminal enforces it (the default).
            "--liveness", "record",
        )  # fmt: skip
        wait_port(web_port, STARTUP_TIMEOUT_S, proc, f"agent of {car['name']}")
        coach_id = f"3711020000000{2}{i + 1:02d}"
        student_id = f"3711020000000{1}{i + 1:02d}"
        self.cars.append({**car, "terminal": terminal, "web": f"http://127.0.0.1:{web_port}", "data": str(data),
                          "coach": (coach_id, PAIRS[i][0]), "student": (student_id, PAIRS[i][1]),
                          "courses": COURSES_ROAD if car["route"] == "road-loop" else COURSES_GROUND})  # fmt: skip

    # --- the people in the cars --------------------------------------------------------------------------

    def scenario(self, car: dict[str, Any]) -> None:
        name = car["name"]
        web = httpx.Client(base_url=car["web"], timeout=30)
        cam = httpx.Client(base_url=self.fleet["camera_url"], timeout=10)

        shown: list[str | None] = ["nobody"]

        def show(who: str | None) -> None:
            if shown[0] == who:
                return  # the same person stays in the seat: a video keeps playing on
            shown[0] = who
            if who is None:
                body: dict[str, Any] = {"empty": True}
            else:
                live = str(self.photos[who]["live"])
                body = {"video": live} if live.endswith((".mp4", ".avi")) else {"image": live}
            _ok(cam.post(f"/cameras/{name}/scene", json=body))

        def sim_now() -> datetime:
            return datetime.fromisoformat(web.get("/api/status").json()["now"])

        def wait_sim(minutes: float) -> bool:
            target = sim_now() + timedelta(minutes=minutes)
            while not self.stop.is_set():
                if sim_now() >= target:
                    return True
                self.stop.wait(0.2)
            return False

        def act(path: str, who: str | None, **body: Any) -> bool:
            show(who)
            r = web.post(path, json=body)
            ok = r.status_code == 200
            log.info("%s %s: %s", name, path, "ok" if ok else r.json().get("reason"))
            return ok

        try:
            wait_sim(1)  # let the GNSS receiver get its first fixes
            round_no = 0
            while not self.stop.is_set():
                if not act("/api/coach/login", car["coach"][1]):
                    self.stop.wait(2)
                    continue
                course = car["courses"][round_no % len(car["courses"])]
                if act("/api/student/login", car["student"][1], course=course):
                    wait_sim(SESSION_SIM_MINUTES)
                    act("/api/student/logout", car["student"][1])
                act("/api/coach/logout", car["coach"][1])
                show(None)
                round_no += 1
                wait_sim(BREAK_SIM_MINUTES)
        except (httpx.HTTPError, RuntimeError) as exc:
            if not self.stop.is_set():
                self.errors.append(f"{name}: {exc}")
                log.error("%s scenario stopped: %s", name, exc)

    # --- reporting ---------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agents": {}}
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            out["platform"] = self.platform.summary()  # escrow per school, releases, the red/black ranking
        with httpx.Client(timeout=10) as http:
            for car in self.cars:
                with contextlib.suppress(httpx.HTTPError):
                    s = http.get(f"{car['web']}/api/status").json()
                    out["agents"][car["name"]] = {"state": s["state"], "records": s["records"], "now": s["now"]}
            hours = {}
            with self.admin() as api:  # reads need a role too (issue 7): the office's bootstrap token
                for st in api.get("/students").json():
                    d = api.get(f"/students/{st['id']}").json()
                    hours[st["id"]] = {h["part"]: f"{h['valid_minutes']}/{h['required_minutes']}" for h in d["hours"]
                                       if h["valid_minutes"]}  # fmt: skip
            out["hours"] = hours
            metrics = http.get(f"http://127.0.0.1:{self.api_port}/metrics").text
            out["metrics"] = {k: v for k, v in _metrics(metrics).items() if not k.startswith("jiapei_terminal_last")}
            notices = http.get(f"http://127.0.0.1:{self.exam_port}/api/v1/stage-reviews").json()
            out["exam_notices"] = [{"student": n["notice"].get("student"), "part": n["notice"].get("part"),
                                    "status": n.get("status")} for n in notices]  # fmt: skip
        return out

    def finish(self, check: bool) -> int:
        """Let the agents drain, print the outcome and judge it when --duration was given."""
        deadline = time.monotonic() + 30
        summary = self.summary()
        while time.monotonic() < deadline:
            pending = sum(a["records"].get("pending", 0) for a in summary["agents"].values())
            if pending == 0:
                break
            time.sleep(1)
            summary = self.summary()
        print(json.dumps(summary, indent=1, ensure_ascii=False))
        if not check:
            return 0
        m = summary["metrics"]
        valid_minutes = m.get(VALID_METRIC, 0)
        agent_records = sum(
            a["records"].get("acked", 0) + a["records"].get("pending", 0) for a in summary["agents"].values()
        )
        problems = list(self.errors)
        if sum(a["records"].get("pending", 0) for a in summary["agents"].values()):
            problems.append("some records were never acknowledged by the server")
        if m.get("jiapei_records_stored_total", 0) < agent_records:
            problems.append(
                f"server stored {m.get('jiapei_records_stored_total', 0):.0f} < {agent_records} agent records"
            )
        if not m.get(VALID_METRIC):
            problems.append("no valid minute")
        if not any(n["status"] == "accepted" for n in summary["exam_notices"]):
            problems.append("no stage review reached the exam system")
        if problems:
            print("DEMO FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print(f"DEMO OK: {agent_records} records signed, stored and acked; {valid_minutes:.0f} "
              f"valid minutes; {len(summary['exam_notices'])} stage reviews at the exam system")  # fmt: skip
        return 0

    def print_where(self) -> None:
        print(f"""
jiapei demo is running — simulated time at {self.args.factor:g}x from {_beijing(self.fleet["sim_start"])}
  server API      http://127.0.0.1:{self.api_port}/api   (docs: http://127.0.0.1:{self.api_port}/docs)
  dashboard       http://127.0.0.1:{self.api_port}/dashboard/   student pages  http://127.0.0.1:{self.api_port}/student/
  metrics         http://127.0.0.1:{self.api_port}/metrics
  exam system     http://127.0.0.1:{self.exam_port}/docs
  MQTT broker     127.0.0.1:{self.mqtt_port} (TLS, client certificates; CA in {self.pki_dir})
  data and logs   {self.dir}""")
        for car in self.cars:
            print(f"  {car['name']} coach screen  {car['web']}/   terminal {car['terminal']} ({car['route']})")
        if self.national:
            print(f"  national car  JT/T 808 terminal {self.national['terminal']} via the gateway at "
                  f"{self.national['gateway']}")  # fmt: skip
        for role, (user, password) in self.platform.logins.items():
            print(f"  log in as {role}: {user} / {password}")
        print("Ctrl-C stops everything.\n", flush=True)


def _beijing(iso: str) -> str:
    from firmware_protocols.identifiers import BEIJING

    return datetime.fromisoformat(iso).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M Beijing time")


def _ok(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url} → {r.status_code}: {r.text[:300]}")
    return r


def _metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jiapei demo", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=None, help="seconds to run, then check and exit")
    p.add_argument("--factor", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    p.add_argument("--cars", type=int, default=3, choices=range(1, len(PAIRS) + 1))
    p.add_argument("--national-cars", type=int, default=1, choices=(0, 1),
                   help="a car with a national-protocol (JT/T 808) terminal, through the gateway (default 1)")
    p.add_argument("--policy", default="demo", help="training policy: demo (small hours) or national-2016")
    p.add_argument("--api-port", type=int, default=0, help="server API port (default: a free one)")
    p.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    p.add_argument("--database-url", default=None, help="server database (default: SQLite in the data dir)")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    demo = Demo(args)
    interrupted = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    signal.signal(signal.SIGTERM, lambda *_: interrupted.set())
    try:
        demo.start()
        demo.print_where()
        threads = [threading.Thread(target=demo.scenario, args=(car,), daemon=True) for car in demo.cars]
        for t in threads:
            t.start()
        started = time.monotonic()
        while not interrupted.is_set():
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            interrupted.wait(10)
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                s = demo.summary()
                m = s["metrics"]
                stored, valid = m.get("jiapei_records_stored_total", 0), m.get(VALID_METRIC, 0)
                print(f"[{time.monotonic() - started:5.0f}s] records stored {stored:.0f} · valid minutes {valid:.0f}"
                      f" · exam notices {len(s['exam_notices'])} · hours {s['hours']}", flush=True)  # fmt: skip
        demo.stop.set()
        for t in threads:
            t.join(timeout=35)
        return demo.finish(args.duration is not None)
    except (RuntimeError, httpx.HTTPError, subprocess.CalledProcessError) as exc:
        print(f"jiapei demo: {exc}\n  logs: {demo.dir}", file=sys.stderr)
        return 1
    finally:
        demo.shutdown()
