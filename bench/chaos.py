"""Chaos rounds: one part of a signed release killed at a random moment, then the same tag run again to the end.

Each round releases a new tag of the FMA-shaped sample (devkit/fma_sample.py: 4 images, two by ko and two
by BuildKit, multi-platform, signed with a cosign key, with a chart), kills one part at one moment, starts
the part again if it is a service, waits for the killed run to end, runs the same tag again, and checks:

- whole or absent: once the chart's version is in the registry, so is every image (each platform and the
  index) with every signature and attestation; no index points at a missing manifest (checked after the
  killed run and after the re-run);
- the re-run exits 0, its summary lists every artifact as the registry has it, and ``fma-release verify``
  passes;
- no rebuild: the re-run has no build task for an image that was published before it started;
- no silent wait: the re-run prints a line within 60 s and ends within the stated bound, and a slot it takes
  over it takes because the holder's process is gone (every run is on this host), never by the stale bound;
- a bounded console with no traceback, for both runs;
- no leaked slot (the tag's limit holds none, no holder record is left) and no process of either run
  left running.

The parts: the registry, dockerd, the Prefect server (each killed with SIGKILL, down for a moment, then
started again on its data), the release process (SIGKILL or SIGINT), and a ko, BuildKit client or cosign
process that the release started (SIGKILL). Everything runs on parts the runner starts for itself: a
Distribution registry, a second dockerd on a bridge of its own (never the machine's dockerd), and a
Prefect server, so other users of the machine are not disturbed. (A test may give the lab a Prefect server it
does not own, its session's: ``Lab.start(..., prefect_url=...)``. The lab then never kills, restarts or stops
it, keeps its tags' slots apart in a namespace of its own, and refuses, before any round runs, rounds that
would kill it.)

The moment: for the registry, dockerd, the Prefect server and the release process, a progress line of
the release (``requester linux/arm64: pushing``...) and a delay after it (before the next line); for a ko,
BuildKit or cosign process, the n-th such process and a delay after its start. The lines, the process counts
and lifetimes come from releases of the sample without a fault made first: one to warm the engine's and Go's
caches (so every round starts alike), one to look at. Each round's choices come from
``Random(f"{seed}:{round}")``: ``--seed S --round R`` replays round R alone.

    .venv/bin/python bench/chaos.py [--rounds 30] [--seed S] [--round R] [--part P] [--json chaos.json]

A broken invariant stops the runner with the seed, the round, the part, the moment and the evidence, and
keeps its directory; exit 1. Exit 2: the runner could not set its parts up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.engine import EngineProcess  # noqa: E402
from devkit.fma_sample import FmaSample, make_fma_source, push_fma_bases  # noqa: E402
from devkit.prefect_api import get as api_get  # noqa: E402
from devkit.prefect_api import post as api_post  # noqa: E402
from devkit.prefect_server import start_prefect_server, wait_for_prefect_server  # noqa: E402
from devkit.proctree import Proc, ProcessWatch, kill_tree  # noqa: E402
from devkit.registry import RegistryProcess, free_port  # noqa: E402
from tasks.control.concurrency import limit_name  # noqa: E402
from tasks.control.slots import holder_variable  # noqa: E402
from tasks.core import tools  # noqa: E402
from tasks.oci.registry import RegistryAPI  # noqa: E402
from tasks.supplychain.provenance import cosign_tag, manifests_to_sign  # noqa: E402

CLI = Path(sys.executable).with_name("fma-release")
PASSWORD = "chaos-rounds"  # noqa: S105 - a throwaway key made for this run
CHART = "fma-controllers"

SERVICES = ("registry", "dockerd", "prefect")
RELEASE = ("release:SIGKILL", "release:SIGINT")
PROCESSES = ("ko", "buildkit", "cosign")
PARTS = SERVICES + RELEASE + PROCESSES

# The bounds the rounds are held to.
FIRST_LINE_S = 60.0  # the re-run's first line
RERUN_S = 240.0  # the re-run, start to end, on a busy 2-core machine
KILLED_RUN_S = 600.0  # a run whose part was killed ends by itself within this
CONSOLE_BYTES = 64_000  # one run's console (stdout and stderr)
LINE_CHARS = 2_000  # one console line
LEFT_GRACE_S = 10.0  # processes of a run may take this long to go after the run's end
# Progress states that only a fault brings: no moment is keyed to them.
TRANSIENT_STATES = ("retrying", "push failed", "engine lost", "failed", "warning", "waiting", "slot taken over")
_LINE = re.compile(r"^\[\s*[\d.]+s\] (?P<item>.+?): (?P<state>[a-z ]+?)(?::|$)")


class Broken(Exception):
    """An invariant a round broke, with the evidence (and what the round measured up to there)."""

    def __init__(self, evidence: str, outcome: Outcome | None = None) -> None:
        super().__init__(evidence)
        self.outcome = outcome


class CannotRun(Exception):
    """The runner's own parts failed: no verdict on the release."""


def log(text: str) -> None:
    print(f"chaos: {text}", file=sys.stderr, flush=True)


# -- the parts ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment for a moment (the runner may run inside a test process)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@dataclass
class Lab:
    """The parts the runner starts and owns: a registry, a second dockerd, a Prefect server, the sample
    source and a cosign key pair; or, given a Prefect server it does not own (a test session's), every part
    but that one, which it only uses."""

    work: Path
    registry: RegistryProcess
    engine: EngineProcess
    prefect_url: str  # the API of the server the releases report to and the checks read
    prefect_home: Path | None  # its own server's home (started again there, on its port); None: not its own
    prefect: subprocess.Popen[bytes] | None  # its own server's process while it runs
    template: Path | None = None
    checkout: Path | None = None  # run the releases from this checkout of fma-release (before/after a change)
    source: FmaSample | None = None
    key: Path | None = None
    pub: Path | None = None
    # FMA_SLOT_NAMESPACE of its releases ("": the server's default). On a server it does not own, one of its own:
    # its tags (v1.0.0...) may be other users' too, whose slots and holder records its runs must not meet.
    slot_namespace: str = ""

    @property
    def owns_prefect(self) -> bool:
        return self.prefect_home is not None

    @property
    def repository(self) -> str:
        return f"{self.registry.host}/chaos/fma"

    @classmethod
    def start(cls, work: Path, template: Path | None = None, *, prefect_url: str | None = None) -> Lab:
        """Start the parts. ``prefect_url``: the API of a Prefect server the lab uses but does not own (it never
        kills, restarts nor stops it; a round that would kill it is refused); without it, the lab starts its own
        (from ``template``, a migrated SQLite database, when given)."""
        started = time.monotonic()
        if prefect_url is not None:
            prefect_url = prefect_url.rstrip("/")
            wait_for_prefect_server(prefect_url, timeout=60)  # RuntimeError: not a server to run rounds on
        registry = RegistryProcess(work / "registry", free_port()).start()
        engine = EngineProcess().start()
        if prefect_url is None:
            prefect, url = start_prefect_server(work / "prefect", ui=False, template=template, port=free_port())
            lab = cls(work, registry, engine, url, work / "prefect", prefect, template)
        else:
            lab = cls(work, registry, engine, prefect_url, None, None, template,
                      slot_namespace=f"chaos-{uuid.uuid4().hex[:12]}")
        try:
            with _environ("DOCKER_HOST", engine.docker_host):  # the bases are built on the runner's engine
                bases = push_fma_bases(f"{registry.host}/bases")
            lab.source = make_fma_source(work / "fma", bases=bases, tag="v0.0.1")  # each release tags it again
            keys = work / "keys"
            keys.mkdir()
            subprocess.run([tools.tool("cosign"), "generate-key-pair"], cwd=keys, capture_output=True, check=True,
                           env={**os.environ, "COSIGN_PASSWORD": PASSWORD}, timeout=120)
            lab.key, lab.pub = keys / "cosign.key", keys / "cosign.pub"
        except BaseException:
            lab.stop()
            raise
        owner = "" if lab.owns_prefect else f" (not the lab's: slot namespace {lab.slot_namespace})"
        log(f"parts up in {time.monotonic() - started:.1f}s: registry {registry.host}, dockerd "
            f"{engine.docker_host}, Prefect {lab.prefect_url}{owner}, work {work}")
        return lab

    def env(self) -> dict[str, str]:
        """The environment of every release run: the runner's parts, the key, state of its own."""
        assert self.key is not None
        env = {**os.environ, "PREFECT_API_URL": self.prefect_url, "DOCKER_HOST": self.engine.docker_host,
               "FMA_SIGNING_KEY": str(self.key), "FMA_SIGNING_PASSWORD": PASSWORD,
               "FMA_STATE_DIR": str(self.work / "state"), "PREFECT_HOME": str(self.work / "client"),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        if self.checkout is not None:
            env["PYTHONPATH"] = str(self.checkout)  # ahead of this checkout's editable install
        for name in ("FMA_SLOT_NAMESPACE", "FMA_SLOT_STALE_SECONDS", "FMA_SLOT_HEARTBEAT_SECONDS",
                     "FMA_SLOT_WAIT_STEP_SECONDS", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"):
            env.pop(name, None)  # the product's own settings
        if self.slot_namespace:
            env["FMA_SLOT_NAMESPACE"] = self.slot_namespace
        return env

    def refuse(self, plans: Iterable[Plan]) -> None:
        """Raise :class:`CannotRun` (one line: the round, the part, the fix) when a plan would kill a Prefect
        server the lab does not own; called before anything of the rounds runs."""
        for plan in plans:
            if plan.part == "prefect" and not self.owns_prefect:
                raise CannotRun(self._not_owned(f"round {plan.round}"))

    def _not_owned(self, who: str) -> str:
        return (f"{who} would kill part 'prefect', the Prefect server at {self.prefect_url}, which this lab uses "
                "but does not own: play it on a lab that starts its own server (bench/chaos.py, or Lab.start "
                "without prefect_url), or choose rounds that kill another part")

    def tag(self, tag: str) -> None:
        """Tag the sample's tagged commit as ``tag`` too: each round releases a tag of its own."""
        assert self.source is not None
        subprocess.run(["git", "tag", "-a", tag, self.source.tag_commit, "-m", f"release {tag}"],
                       cwd=self.source.path, check=True, capture_output=True, timeout=60,
                       env={**os.environ, "GIT_COMMITTER_NAME": "chaos",
                            "GIT_COMMITTER_EMAIL": "chaos@example.invalid"})

    def kill(self, part: str) -> str:
        """SIGKILL a service; what was killed."""
        if part == "registry":
            pid = self.registry.process.pid if self.registry.process else 0
            self.registry.kill()
            return f"docker-registry {pid}"
        if part == "dockerd":
            pid = self.engine.process.pid if self.engine.process else 0
            self.engine.kill()
            return f"dockerd {pid}"
        if part == "prefect":
            if not self.owns_prefect:  # never a server it does not own (play() refused the round already)
                raise CannotRun(self._not_owned("Lab.kill('prefect')"))
            assert self.prefect is not None
            killed = kill_tree(self.prefect.pid)  # the server runs its web app and services in child processes
            self.prefect.wait()
            self.prefect = None
            return f"prefect server {len(killed)} process(es)"
        raise ValueError(part)

    def restart(self, part: str) -> None:
        if part == "registry":
            self.registry.start()
        elif part == "dockerd":
            self.engine.restart(timeout=60)
        elif part == "prefect":
            if self.prefect_home is None:
                raise CannotRun(f"the Prefect server at {self.prefect_url} is not the lab's to start")
            self.prefect, _ = start_prefect_server(self.prefect_home, ui=False, port=urlsplit(self.prefect_url).port)
        else:
            raise ValueError(part)

    def stop(self) -> None:
        from devkit.prefect_server import stop_prefect_server

        if self.prefect is not None:  # only ever its own
            stop_prefect_server(self.prefect)
            self.prefect = None
        self.engine.stop()
        self.registry.stop()


# -- one release run, watched ------------------------------------------------------------------------


class Run:
    """``fma-release run TAG`` in its own process: its console lines as they come (with their time),
    every process it starts (devkit/proctree.py), its exit."""

    def __init__(self, lab: Lab, tag: str, name: str) -> None:
        assert lab.source is not None
        self.name = name
        self.summary = lab.work / "runs" / f"{name}.summary.json"
        self.summary.parent.mkdir(exist_ok=True)
        self.log = lab.work / "runs" / f"{name}.log"
        cli = [sys.executable, "-m", "flows.cli"] if lab.checkout is not None else [str(CLI)]
        argv = [*cli, "run", tag, "--source", str(lab.source.path), "--config", str(lab.source.config),
                "--registry", lab.repository, "--summary-json", str(self.summary)]
        self.lines: list[tuple[float, str]] = []
        self.started = time.monotonic()
        self.ended: float | None = None
        # cwd: not this checkout, whose packages would come first on a --checkout run's path
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=lab.env(),
                                     text=True, errors="replace", bufsize=1, cwd=lab.work)
        self.watch = ProcessWatch(self.proc.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("w") as out:
            for line in self.proc.stdout:
                self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
                out.write(line)
                out.flush()

    def done(self) -> bool:
        return self.proc.poll() is not None

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=10)
        self.ended = self.ended or time.monotonic()
        return code

    @property
    def took(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def console(self) -> str:
        return "\n".join(text for _, text in self.lines)

    def steps(self) -> list[tuple[float, str]]:
        """``(seconds, "item: state")`` of each progress line."""
        found = []
        for at, text in self.lines:
            match = _LINE.match(text)
            if match:
                found.append((at, f"{match['item']}: {match['state']}"))
        return found

    def step_at(self, seconds: float) -> str:
        """The last progress line printed by ``seconds`` into the run."""
        before = [step for at, step in self.steps() if at <= seconds]
        return before[-1] if before else "(before the first line)"

    def flow_run_id(self) -> str:
        for _, text in self.lines:
            if "Prefect UI: " in text:
                return text.strip().rsplit("/", 1)[-1]
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.watch.stop()


def _is_ko(proc: Proc) -> bool:
    return proc.name == "ko" and "build" in proc.argv


def _is_buildkit(proc: Proc) -> bool:
    """A BuildKit build's client (``docker build``, ``docker buildx build``), not the CLI's version probes."""
    return proc.name == "docker" and "build" in proc.argv


def _is_cosign(proc: Proc) -> bool:
    return proc.name == "cosign"


KINDS: dict[str, Callable[[Proc], bool]] = {"ko": _is_ko, "buildkit": _is_buildkit, "cosign": _is_cosign}


# -- what a clean release looks like -----------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What a release without a fault showed: its progress steps (the moments) with the seconds from each to the
    next, how many processes of each kind it started and how long they lived, each image's platforms."""

    moments: dict[str, float]  # step -> seconds until the next step (or the run's end)
    processes: dict[str, int]
    lifetimes: dict[str, float]  # the median lifetime of a process of each kind, in seconds
    platforms: dict[str, tuple[str, ...]]
    took: float


def _lifetimes(watch: ProcessWatch, match: Callable[[Proc], bool], ended: dict[int, float]) -> list[float]:
    return [ended.get(p.pid, p.seen_at) - p.seen_at for p in watch.processes(match)]


def _release_without_fault(lab: Lab, tag: str) -> Shape:
    lab.tag(tag)
    run = Run(lab, tag, f"clean-{tag}")
    ended: dict[int, float] = {}
    # How long each process lives: looked at while the run goes.
    while not run.done():
        for proc in run.watch.processes():
            if proc.pid not in ended and not proc.alive():
                ended[proc.pid] = time.monotonic()
        time.sleep(0.05)
    code = run.wait(30)
    run.stop()
    if code != 0:
        raise CannotRun(f"the release of {tag} without a fault failed ({code}); see {run.log}:\n"
                        f"{run.console()[-3000:]}")
    summary = json.loads(run.summary.read_text())
    platforms = {image["name"]: tuple(sorted(p["platform"] for p in image["platforms"])) or (image["platform"],)
                 for image in summary["images"]}
    steps = [(at, step) for at, step in run.steps() if not step.endswith(TRANSIENT_STATES)]
    moments: dict[str, float] = {}
    for index, (at, step) in enumerate(steps):
        following = steps[index + 1][0] if index + 1 < len(steps) else run.took
        moments.setdefault(step, max(0.0, following - at))
    counts = {kind: len(run.watch.processes(match)) for kind, match in KINDS.items()}
    lives = {kind: statistics.median(_lifetimes(run.watch, match, ended) or [1.0]) for kind, match in KINDS.items()}
    return Shape(dict(sorted(moments.items())), counts, lives, platforms, run.took)


def clean_release(lab: Lab) -> Shape:
    """Release the sample twice without a fault: the first fills the engine's and Go's caches (as every round
    finds them), the second is what a round looks like."""
    cold = _release_without_fault(lab, "v1.0.0")
    shape = _release_without_fault(lab, "v1.0.1")
    log(f"releases without a fault: {cold.took:.1f}s cold, {shape.took:.1f}s warm; {len(shape.moments)} moments, "
        f"processes {shape.processes}, platforms {shape.platforms}")
    return shape


# -- a round's plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One round's choices, all drawn from ``Random(f"{seed}:{round}")``."""

    round: int
    part: str
    moment: str  # a progress step, or "<kind> #n"
    delay: float  # seconds after the moment
    down: float  # seconds a service stays down

    @property
    def tag(self) -> str:
        return f"v1.{self.round}.0"

    def __str__(self) -> str:
        down = f", down {self.down:.1f}s" if self.part in SERVICES else ""
        return f"{self.part} at '{self.moment}' +{self.delay:.2f}s{down}"


def _draw_part(seed: int, number: int, part: str | None) -> tuple[random.Random, str]:
    rng = random.Random(f"{seed}:{number}")  # noqa: S311 - chaos, not cryptography
    chosen = rng.choice(PARTS)  # drawn even under --part: the moment's draws stay the seed's
    return rng, part or chosen


def round_part(seed: int, number: int, part: str | None = None) -> str:
    """The part round ``number`` of ``seed`` kills, as :func:`plan_round` draws it: its first draw, which no
    release enters (known before any part starts)."""
    return _draw_part(seed, number, part)[1]


def plan_round(seed: int, number: int, shape: Shape, part: str | None = None) -> Plan:
    rng, part = _draw_part(seed, number, part)
    if part in PROCESSES:
        nth = rng.randint(1, max(1, shape.processes.get(part, 1)))
        delay = rng.uniform(0, min(2.0, 0.8 * shape.lifetimes.get(part, 1.0)))
        moment = f"{part} #{nth}"
    else:
        moment = rng.choice(list(shape.moments))
        delay = rng.uniform(0, min(1.5, shape.moments[moment]))  # before the next step, as far as it can tell
    down = rng.uniform(0.5, 5.0)
    return Plan(number, part, moment, round(delay, 2), round(down, 1))


# -- the registry as the release left it -------------------------------------------------------------


def registry_state(lab: Lab, tag: str, shape: Shape) -> tuple[list[str], bool, dict[str, str]]:
    """``(problems, chart published, image digests)``: every image at the tag with its platforms, index
    entries, signatures and attestations; a problem for each that is missing while the chart is published,
    and for every index entry that points at nothing whatever the chart."""
    problems: list[str] = []
    missing: list[str] = []
    digests: dict[str, str] = {}
    repo = lab.repository.split("/", 1)[1]
    version = tag.removeprefix("v")
    with RegistryAPI(lab.registry.host) as api:
        chart_digest = api.digest(f"{repo}/charts/{CHART}", version)
        for name, platforms in shape.platforms.items():
            found = api.manifest(f"{repo}/{name}", tag)
            if found is None:
                missing.append(f"image {name}:{tag}")
                continue
            digest, manifest = found
            digests[name] = digest
            listed = manifests_to_sign(digest, manifest)
            entries = {m.platform for m in listed if not m.is_index}
            if len(platforms) > 1 and set(platforms) - entries:
                missing.append(f"{name}:{tag} platforms {sorted(set(platforms) - entries)}")
            for item in listed:
                if not item.is_index and len(listed) > 1 and api.manifest(f"{repo}/{name}", item.digest) is None:
                    problems.append(f"the index {name}:{tag} points at a missing manifest {item.digest}")
                for kind in ("sig", "att"):
                    if not api.digest(f"{repo}/{name}", cosign_tag(item.digest, kind)):
                        missing.append(f"{name} {item.platform or 'index'} {item.digest[:19]} .{kind}")
        if chart_digest and not api.digest(f"{repo}/charts/{CHART}", cosign_tag(chart_digest, "sig")):
            missing.append(f"chart {CHART}:{version} .sig")
    if chart_digest:
        problems += [f"chart {CHART}:{version} is published but {what} is missing" for what in missing
                     if not what.startswith(f"chart {CHART}")]
    return problems, bool(chart_digest), digests


def published(lab: Lab, tag: str, shape: Shape) -> set[str]:
    """The images whose tag is in the registry with every platform (their push completed)."""
    repo = lab.repository.split("/", 1)[1]
    done = set()
    with RegistryAPI(lab.registry.host) as api:
        for name, platforms in shape.platforms.items():
            found = api.manifest(f"{repo}/{name}", tag)
            if found is None:
                continue
            listed = {m.platform for m in manifests_to_sign(*found) if not m.is_index}
            if len(platforms) == 1 or set(platforms) <= listed:
                done.add(name)
    return done


# -- one round ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a round measured."""

    round: int
    part: str
    moment: str
    delay: float = 0.0
    killed: str = ""
    step: str = ""  # the step that was running when the part was killed
    killed_at: float = 0.0  # seconds into the first run
    first_exit: int | None = None
    first_took: float = 0.0
    rerun_s: float = 0.0
    rerun_first_line_s: float = 0.0
    rerun_slot_s: float = 0.0  # when the re-run took the slot over from the killed run (0: it did not wait)
    rebuilt: list[str] = field(default_factory=list)
    published_before: list[str] = field(default_factory=list)
    broken: str = ""  # the first line of what broke (--keep-going)


def _kill_process(run: Run, plan: Plan) -> tuple[str, float] | None:
    """Kill the n-th process of the plan's kind ``delay`` s after it started (or, when it ended first, the
    next one as soon as it is seen); what was killed and when, or ``None`` when the run ended first."""
    kind, nth = plan.moment.split(" #")
    match = KINDS[kind]
    target = run.watch.wait_for(match, int(nth), timeout=KILLED_RUN_S, until=run.done)
    while target is not None:
        time.sleep(max(0.0, target.seen_at + plan.delay - time.monotonic()))
        if target.signal(signal.SIGKILL):
            return str(target), time.monotonic() - run.started
        count = len(run.watch.processes(match))
        target = run.watch.wait_for(match, count + 1, timeout=KILLED_RUN_S, until=run.done)
    return None


def _kill_at_step(run: Run, plan: Plan, lab: Lab) -> tuple[str, float] | None:
    """Kill the plan's part ``delay`` s after the run printed its moment; ``None`` when the run ended first."""
    deadline = time.monotonic() + KILLED_RUN_S
    while plan.moment not in {step for _, step in run.steps()}:
        if run.done() or time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    time.sleep(plan.delay)
    if plan.part in SERVICES:
        return lab.kill(plan.part), time.monotonic() - run.started
    if run.done():
        return None
    signum = signal.SIGKILL if plan.part == "release:SIGKILL" else signal.SIGINT
    run.proc.send_signal(signum)
    return f"fma-release {run.proc.pid} ({signal.Signals(signum).name})", time.monotonic() - run.started


def _console_problems(run: Run) -> list[str]:
    text = run.console()
    problems = []
    if len(text) > CONSOLE_BYTES:
        problems.append(f"{run.name}: console of {len(text)} bytes (bound {CONSOLE_BYTES})")
    longest = max((len(t) for _, t in run.lines), default=0)
    if longest > LINE_CHARS:
        problems.append(f"{run.name}: a console line of {longest} characters (bound {LINE_CHARS})")
    if "Traceback (most recent call last)" in text:
        at = text.index("Traceback (most recent call last)")
        problems.append(f"{run.name}: a traceback on the console:\n{text[at:at + 2000]}")
    return problems


def _build_tasks(lab: Lab, run: Run) -> list[str] | None:
    """The images the run built (its build task runs that ran, not answered from the cache), from the
    Prefect server; ``None`` when the server cannot say."""
    run_id = run.flow_run_id()
    if not run_id:
        return None
    tasks = api_post(f"{lab.prefect_url}/task_runs/filter",
                     {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})
    built = set()
    for task in tasks:
        name = str(task.get("name", ""))
        state = (task.get("state") or {}).get("name", "")
        if name.startswith("build ") and state != "Cached":
            built.add(name.removeprefix("build ").split(" ")[0])
    return sorted(built)


def _slot_problems(lab: Lab, tag: str) -> list[str]:
    name = limit_name(tag, lab.slot_namespace)  # as the releases named it (Lab.env)
    problems = []
    try:
        limit = api_get(f"{lab.prefect_url}/v2/concurrency_limits/{name}")
        if limit.get("active_slots"):
            problems.append(f"the slot {name} is still held ({limit['active_slots']} active)")
    except Exception as err:  # no limit is no leak
        if "404" not in str(err):
            raise
    variables = api_post(f"{lab.prefect_url}/variables/filter",
                         {"variables": {"name": {"any_": [holder_variable(name)]}}})
    if variables:
        problems.append(f"the holder record {holder_variable(name)} is left: {variables[0].get('value')}")
    return problems


def _summary_problems(run: Run, digests: dict[str, str], shape: Shape) -> list[str]:
    try:
        summary = json.loads(run.summary.read_text())
    except (OSError, ValueError) as err:
        return [f"no summary JSON ({err})"]
    problems = []
    listed = {image["name"]: image for image in summary.get("images", [])}
    for name, platforms in shape.platforms.items():
        image = listed.get(name)
        if image is None:
            problems.append(f"the summary does not list {name}")
            continue
        if image.get("digest") != digests.get(name):
            problems.append(f"the summary's {name} is {image.get('digest')}, the registry's {digests.get(name)}")
        shown = tuple(sorted(p["platform"] for p in image.get("platforms", []))) or (image.get("platform"),)
        if shown != platforms:
            problems.append(f"the summary lists {name} for {shown}, the release has {platforms}")
    if [c.get("name") for c in summary.get("charts", [])] != [CHART]:
        problems.append(f"the summary's charts are {summary.get('charts')}")
    return problems


def _verify(lab: Lab, tag: str) -> list[str]:
    done = subprocess.run(
        [str(CLI), "verify", tag, "--key", str(lab.pub), "--registry", lab.repository, "--chart", CHART],
        capture_output=True, text=True, timeout=300, env=lab.env(), check=False)
    return [] if done.returncode == 0 else [f"fma-release verify failed ({done.returncode}):\n"
                                            f"{(done.stdout + done.stderr)[-3000:]}"]


def _left_running(runs: list[Run]) -> list[str]:
    deadline = time.monotonic() + LEFT_GRACE_S
    while True:
        left = [proc for run in runs for proc in run.watch.alive()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for proc in left:  # the evidence is kept; the processes are not left to the next round
        proc.signal(signal.SIGKILL)
    return [f"left running after the round: {proc}" for proc in left]


def play(lab: Lab, shape: Shape, plan: Plan) -> Outcome:
    """Play one round; raises :class:`Broken` with the evidence when an invariant breaks, :class:`CannotRun`
    (before anything runs) when it would kill a Prefect server the lab does not own."""
    lab.refuse([plan])
    out = Outcome(plan.round, plan.part, plan.moment, plan.delay)
    lab.tag(plan.tag)
    first = Run(lab, plan.tag, f"round{plan.round}-killed")
    runs = [first]
    try:
        hit = _kill_process(first, plan) if plan.part in PROCESSES else _kill_at_step(first, plan, lab)
        if hit is not None:
            out.killed, out.killed_at = hit
            out.step = first.step_at(out.killed_at)
            if plan.part in SERVICES:
                time.sleep(plan.down)
                try:
                    lab.restart(plan.part)
                except RuntimeError as err:  # the runner's own part: no verdict on the release
                    raise CannotRun(f"round {plan.round}: {plan.part} did not start again: {err}") from err
        out.first_exit = first.wait(KILLED_RUN_S)
        out.first_took = first.took
        if out.first_exit is None:
            raise Broken(f"the run whose {plan.part} was killed did not end within {KILLED_RUN_S:.0f}s:\n"
                         f"{first.console()[-3000:]}", out)
        problems, _, _ = registry_state(lab, plan.tag, shape)
        problems += _console_problems(first)
        if problems:
            raise Broken("after the killed run: " + "\n".join(problems), out)

        out.published_before = sorted(published(lab, plan.tag, shape))
        rerun = Run(lab, plan.tag, f"round{plan.round}-rerun")
        runs.append(rerun)
        code = rerun.wait(RERUN_S)
        out.rerun_s = rerun.took
        out.rerun_first_line_s = rerun.lines[0][0] if rerun.lines else rerun.took
        out.rerun_slot_s = next((at for at, text in rerun.lines if text.startswith("slot taken over:")), 0.0)
        problems = []
        if code is None:
            problems.append(f"the re-run did not end within {RERUN_S:.0f}s")
            rerun.stop()
        elif code != 0:
            problems.append(f"the re-run exited {code}")
        if out.rerun_first_line_s > FIRST_LINE_S:
            problems.append(f"the re-run printed nothing for {out.rerun_first_line_s:.0f}s")
        # Every run here is on this host: a slot is taken over because its holder's process is gone, at once,
        # never by waiting out the stale bound.
        problems += [f"the re-run took the slot over by the stale bound: {text}" for _, text in rerun.lines
                     if text.startswith("slot taken over:") and "is gone" not in text]
        problems += _console_problems(rerun)
        if problems:
            raise Broken("\n".join(problems) + f"\nthe re-run's console:\n{rerun.console()[-3000:]}", out)
        state, whole, digests = registry_state(lab, plan.tag, shape)
        if not whole:
            state.append(f"the chart {CHART}:{plan.tag.removeprefix('v')} is not published after the re-run")
        rebuilt = _build_tasks(lab, rerun)
        if rebuilt is None:
            state.append("the re-run's build tasks cannot be read (no flow run id on its console)")
        else:
            out.rebuilt = rebuilt
            again = sorted(set(rebuilt) & set(out.published_before))
            if again:
                state.append(f"the re-run rebuilt {again}, published before it started")
        state += _summary_problems(rerun, digests, shape)
        state += _verify(lab, plan.tag)
        state += _slot_problems(lab, plan.tag)
        state += _left_running(runs)
        if state:
            raise Broken("\n".join(state), out)
        return out
    finally:
        for run in runs:
            run.stop()


# -- the runner --------------------------------------------------------------------------------------


def table(outcomes: list[Outcome]) -> str:
    rows = [("round", "part", "moment", "killed during", "killed run", "re-run (s)", "first line (s)", "slot taken (s)",
             "rebuilt")]
    for o in outcomes:
        rebuilt = "?" if o.broken and not o.rebuilt else (
            str(len(o.rebuilt)) + (f" ({', '.join(o.rebuilt)})" if o.rebuilt else ""))  # a broken round stops early
        rows.append((str(o.round), o.part, f"{o.moment} +{o.delay:.2f}s", o.step or "(not reached)",
                     f"exit {o.first_exit}, {o.first_took:.1f}s", f"{o.rerun_s:.1f}", f"{o.rerun_first_line_s:.1f}",
                     f"{o.rerun_slot_s:.1f}" if o.rerun_slot_s else "-", rebuilt))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def run_rounds(lab: Lab, shape: Shape, seed: int, numbers: list[int], *,
               part: str | None = None, keep_going: bool = False) -> tuple[list[Outcome], str]:
    """Play the rounds ``numbers`` of ``seed``; their outcomes, and what broke (``""`` when nothing did): the
    first round that broke an invariant ends the rounds, unless ``keep_going``. :class:`CannotRun` before the
    first round when one would kill a Prefect server the lab does not own."""
    outcomes: list[Outcome] = []
    broken: list[str] = []
    plans = [plan_round(seed, number, shape, part) for number in numbers]
    lab.refuse(plans)
    for number, plan in zip(numbers, plans, strict=True):
        log(f"round {number}: {plan.tag}: {plan}")
        try:
            outcome = play(lab, shape, plan)
        except Broken as err:
            report = (f"round {number} broke an invariant: seed {seed}, part {plan.part}, moment "
                      f"'{plan.moment}' +{plan.delay}s; replay: bench/chaos.py --seed {seed} --round {number}"
                      + (f" --part {part}" if part else "") + f"\n{err}\nlogs: {lab.work / 'runs'}")
            if not keep_going or err.outcome is None:
                return outcomes, "\n".join([*broken, report])
            log(report)
            broken.append(report)
            outcome = err.outcome
            outcome.broken = str(err).splitlines()[0]
        outcomes.append(outcome)
        log(f"round {number}: killed {outcome.killed or 'nothing (the run ended first)'} during "
            f"'{outcome.step or '-'}'; re-run {outcome.rerun_s:.1f}s, rebuilt {outcome.rebuilt or 'nothing'}")
    return outcomes, "\n".join(broken)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="how many rounds (default 30)")
    parser.add_argument("--seed", type=int, help="the seed of every round's choices (default: a new one, printed)")
    parser.add_argument("--round", type=int, help="play only this round of the seed (a replay)")
    parser.add_argument("--part", choices=PARTS, help="kill this part in every round (the moment stays random)")
    parser.add_argument("--json", type=Path, help="write the rounds' figures here")
    parser.add_argument("--prefect-template", type=Path,
                        help="a migrated SQLite database to start the Prefect server from (faster)")
    parser.add_argument("--keep", action="store_true", help="keep the runner's directory")
    parser.add_argument("--keep-going", action="store_true",
                        help="go on after a round that broke an invariant (the table says what broke; exit 1)")
    parser.add_argument("--checkout", type=Path,
                        help="release with this checkout of fma-release instead of this one (a before/after figure)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    numbers = [args.round] if args.round else list(range(1, args.rounds + 1))
    log(f"seed {seed}, rounds {numbers[0]}..{numbers[-1]}" + (f", part {args.part}" if args.part else "")
        + f" (replay one: bench/chaos.py --seed {seed} --round N)")
    work = Path(tempfile.mkdtemp(prefix="fma-chaos-"))
    outcomes: list[Outcome] = []
    broken = ""
    code = 0
    lab = None
    try:
        lab = Lab.start(work, args.prefect_template)
        lab.checkout = args.checkout
        shape = clean_release(lab)
        outcomes, broken = run_rounds(lab, shape, seed, numbers, part=args.part, keep_going=args.keep_going)
        if broken:
            if not args.keep_going:
                log(broken)
            code = 1
    except CannotRun as err:
        log(f"cannot run: {err}")
        code = 2
    finally:
        if lab is not None:
            lab.stop()
        if args.keep or code:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if outcomes:
        print(table(outcomes))
        reruns = [o.rerun_s for o in outcomes]
        count = sum(1 for o in outcomes if o.broken) or (1 if code == 1 else 0)
        print(f"{len(outcomes)} round(s), seed {seed}: re-run median {statistics.median(reruns):.1f}s, "
              f"max {max(reruns):.1f}s; rounds that broke an invariant: {count}")
        for o in outcomes:
            if o.broken:
                print(f"round {o.round} broke: {o.broken}")
    if args.json:
        args.json.write_text(json.dumps({"seed": seed, "broken": broken,
                                         "rounds": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
