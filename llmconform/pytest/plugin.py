"""pytest plugin: options, markers, and the `llm` fixture that hands suites a ready server.

It only wires modules together: matrix -> cases, resources -> what fits, pool -> running servers, llm -> handle.
Each case's server boots once per session; its tests are grouped (xdist `loadgroup`) so one worker runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from llmconform.errors import UserError

if TYPE_CHECKING:
    from llmconform.config.case import Case
    from llmconform.progress import Progress
    from llmconform.reports.report_dir import ReportDir
    from llmconform.serving.llm import LLM
    from llmconform.serving.pool import ServerPool

# The rest of llmconform is imported where it is used: installed, this module is loaded into every pytest run on the
# machine (pytest11), and a run that uses none of llmconform's options and no `llm` fixture imports nothing more.

MARKERS = {
    "engine": "needs a running engine server (the `llm` fixture)",
    "gpu": "needs at least one GPU",
    "multinode": "needs several nodes (run inside a SLURM allocation)",
    "perf": "measures performance (throughput, latency) against floors",
    "slow": "takes minutes",
    "skip_case_if": "skip_case_if(predicate, reason): skipped for a matrix case where predicate(case) is true, "
                    "decided when collecting, so that no server starts for the test",
}  # and one per registered engine, named after it
REPORT_DIR_KEY = "llmconform_report_dir"


def pytest_addhooks(pluginmanager):
    from llmconform.pytest import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser):
    group = parser.getgroup("llmconform", "LLM serving engine conformance")
    group.addoption("--matrix", action="append", default=[], metavar="FILE",
                    help="YAML matrix of engines x models x layouts to run the suites against (repeatable)")
    group.addoption("--case", action="append", default=[], metavar="GLOB",
                    help="run only the cases whose id matches GLOB, e.g. 'vllm-qwen2-tiny-tp*' (repeatable; "
                         "`llmconform plan` lists the ids)")
    group.addoption("--engine", help="one-off case: engine name (vllm, sglang, trtllm)")
    group.addoption("--model", help="one-off case: model source (factory:NAME, shape:NAME, path:DIR, hf:ID)")
    group.addoption("--layout", action="append", default=[], help="one-off case: layout(s), e.g. tp2 (repeatable)")
    group.addoption("--engine-command", help="one-off case: how to start the engine (e.g. '/venv/bin/vllm serve')")
    group.addoption("--engine-device", choices=("cuda", "cpu"), default=None, help="one-off case: device")
    group.addoption("--llm-url", default=os.environ.get("LLMCONFORM_URL"),
                    help="attach to a running server at URL (starts nothing); env LLMCONFORM_URL")
    group.addoption("--llm-model", default=os.environ.get("LLMCONFORM_MODEL"),
                    help="model id of the attached server; env LLMCONFORM_MODEL")
    group.addoption("--llm-engine", default=os.environ.get("LLMCONFORM_ENGINE", "unknown"),
                    help="engine of the attached server (for its known deviations); env LLMCONFORM_ENGINE")
    group.addoption("--llm-api-key", default=os.environ.get("LLMCONFORM_API_KEY"),
                    help="API key of the attached server; env LLMCONFORM_API_KEY")
    group.addoption("--perf-baseline", default=None, metavar="FILE",
                    help="perf-summary.json of an earlier run, for relative floors (output_tok_s:-5%%)")
    group.addoption("--load-workers", type=int, default=None, metavar="N",
                    help="load-generator worker processes per throughput point (default: from the cores and the "
                         "expected chunk rate)")
    group.addoption("--hang-timeout", type=float, default=180.0, metavar="SECONDS",
                    help="declare a started engine hung (and kill it) when GET /health has not answered for this "
                         "long; its case's remaining tests are not run (default 180; 0 turns the watchdog off)")
    group.addoption("--report-dir", default=None,
                    help="where logs, results and reports go (default reports/<matrix>-<time>)")


@dataclass
class Session:
    """What the plugin knows for the whole session."""

    cases: list = field(default_factory=list)
    unfit: dict = field(default_factory=dict)  # case id -> why it cannot run here
    attach: LLM | None = None
    report_dir: ReportDir | None = None
    pool: ServerPool | None = None
    results: ResultsWriter | None = None
    progress: Progress | None = None  # set once the run has something to show
    interrupted_by: str = "Ctrl-C"
    dead: dict = field(default_factory=dict)  # case id -> the one line saying how its engine failed


SESSION = pytest.StashKey["Session"]()


def _register_extensions(config) -> None:
    """The engines and launchers of the user's conftest files and plugins (llmconform.pytest.hookspecs)."""
    from llmconform import engines

    for found in config.hook.pytest_llmconform_engines():
        for engine in found:
            engines.register(engine)
    added = [launcher for found in config.hook.pytest_llmconform_launchers() for launcher in found]
    if added:
        from llmconform.serving import launchers

        for launcher in added:
            launchers.register(launcher)
    files = [path for found in config.hook.pytest_llmconform_deviations() for path in found]
    if files:
        from llmconform.engines import deviations

        for path in files:
            deviations.add_file(Path(config.rootpath, path))


def session_of(config) -> Session | None:
    """The plugin's state of this pytest run; None where the plugin did not configure it (`-p no:llmconform`)."""
    return config.stash.get(SESSION, None)


def configured_session(config) -> Session:
    """The plugin's state, where its own hooks and fixtures (and the suites through them) run: configured."""
    session = session_of(config)
    assert session is not None, "llmconform's pytest_configure did not run"
    return session


@pytest.hookimpl(tryfirst=True)  # before pytest's junitxml plugin reads --junitxml (the report dir's default)
def pytest_configure(config):
    from llmconform import engines  # small: the engines' declarations, no I/O libraries

    try:
        _register_extensions(config)
    except UserError as error:
        pytest.exit(f"llmconform: {error}", returncode=error.exit_code)
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    for name in engines.ENGINES:
        config.addinivalue_line("markers", f"{name}: runs against the {name} engine")
    session = Session()
    config.stash[SESSION] = session
    if not _uses_llmconform(config):
        return  # suites collected without an engine are refused in pytest_collection_modifyitems
    from llmconform.engines import deviations
    from llmconform.engines.deviations import DeviationFileError
    from llmconform.progress import Progress
    from llmconform.reports import run_identity
    from llmconform.serving import preflight, resources
    from llmconform.serving.pool import ServerPool

    # Declared engine bugs turn into xfails with their diagnosis (a no-op if `-p llmconform.engines.known_failures`
    # did it).
    config.pluginmanager.import_plugin("llmconform.engines.known_failures")
    # The OpenAI suites' `conformance` fixture, registered here so that suites (shipped or the user's) use it without
    # importing it.
    config.pluginmanager.import_plugin("llmconform.pytest.conformance_fixture")
    try:
        _load_cases(config, session)
        if session.cases or session.attach:  # a broken deviation list must stop the run before anything starts
            deviations.in_force()
        if session.attach and not config.option.collectonly and not hasattr(config, "workerinput"):
            preflight.check_attached(session.attach.base_url, session.attach.model, session.attach.api_key)
        if config.option.collectonly or not (session.cases or session.attach or config.getoption("report_dir")):
            return  # nothing to run (e.g. the framework's own unit tests, --collect-only): no report dir
        session.report_dir = _report_dir(config)
    except UserError as error:
        pytest.exit(f"llmconform: {error}", returncode=error.exit_code)
    if not config.option.xmlpath:
        config.option.xmlpath = str(session.report_dir.junit)
        # The tests' properties feed results.jsonl (the reports), not the XML: xunit2 leaving them out is right.
        config.addinivalue_line("filterwarnings", "ignore:record_property is incompatible with junit_family")
    session.progress = Progress.for_pytest(config)
    if not session.progress.quiet:
        config.pluginmanager.register(session.progress, "llmconform-progress")
    if session.attach:
        session.attach.report_dir = session.report_dir
        session.attach.progress = session.progress
    if session.cases:
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
        session.pool = ServerPool(session.report_dir, resources.detect(), worker=worker,
                                  hang_timeout_s=config.getoption("hang_timeout") or None,
                                  notify=_notifier(config), progress=session.progress)
        # SIGTERM (CI cancel, scancel) must still run fixture teardown, which stops the servers.
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm(session))
    if not hasattr(config, "workerinput"):
        try:
            identity = run_identity.describe_here(run_identity.argv_here(), deviations.files_in_force())
        except DeviationFileError as error:
            pytest.exit(f"llmconform: {error}", returncode=UserError.exit_code)
        run_identity.write(session.report_dir, identity)
        session.results = ResultsWriter(session.report_dir.results)
        config.pluginmanager.register(session.results, "llmconform-results")


def _uses_llmconform(config) -> bool:
    """Whether this run asks for engine servers: a matrix, a one-off engine, an attached server or a report dir."""
    return any(config.getoption(name) for name in ("matrix", "engine", "llm_url", "report_dir"))


def _notifier(config):
    """notify(text): a line on the terminal while a test runs (capture suspended), e.g. what a start waits for."""
    def notify(text: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        terminal = config.pluginmanager.getplugin("terminalreporter")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if terminal is not None:
                terminal.write_line(f"llmconform: {text}")
            else:  # an xdist worker: its stderr is the run's
                os.write(2, f"llmconform: {text}\n".encode())

    return notify


def _interrupt_on_sigterm(session: Session):
    def handler(signum, frame):
        session.interrupted_by = "SIGTERM"
        raise KeyboardInterrupt("SIGTERM")

    return handler


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):  # xdist controller -> workers: one report dir for the whole run
    report_dir = configured_session(node.config).report_dir
    if report_dir:
        node.workerinput[REPORT_DIR_KEY] = str(report_dir.path)


def _report_dir(config) -> ReportDir:
    from llmconform.reports.report_dir import ReportDir

    if REPORT_DIR_KEY in getattr(config, "workerinput", {}):
        return ReportDir(Path(config.workerinput[REPORT_DIR_KEY]))
    chosen = config.getoption("report_dir")
    stem = "-".join(Path(m).stem for m in config.getoption("matrix")) or "run"
    return ReportDir.create(Path(chosen) if chosen else None, Path("reports"),
                            f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def _load_cases(config, session: Session) -> None:
    from llmconform.config import matrix as matrices
    from llmconform.reports.report_dir import ReportDir
    from llmconform.serving import launchers, resources
    from llmconform.serving.llm import LLM
    from llmconform.serving.planner import plan_case

    url = config.getoption("llm_url")
    if url:
        model = config.getoption("llm_model")
        if not model:
            raise UserError("--llm-url needs --llm-model (or LLMCONFORM_MODEL): the model id the server serves")
        session.attach = LLM(base_url=url.rstrip("/"), model=model, engine=config.getoption("llm_engine"),
                             engine_version=None, report_dir=ReportDir(Path(".")),
                             api_key=config.getoption("llm_api_key"))
        return
    loaded = [matrices.load(path) for path in config.getoption("matrix")]
    one_off = _one_off_matrix(config)
    if one_off:
        loaded.append(one_off)
    loaded = matrices.select(loaded, config.getoption("case"))
    hardware = resources.detect()
    for m in loaded:
        for case in m.cases:
            result = plan_case(case, hardware)
            if result.error:  # an impossible layout: say which rule it breaks before anything starts
                raise UserError(f"{m.file}: case {case.id}: {result.error}")
            if result.unfit:
                session.unfit[case.id] = result.unfit
            elif launchers.get(case.launcher).runs_command_here:
                _check_executable(case)
            session.cases.append(case)


def _one_off_matrix(config):
    from llmconform.config import matrix as matrices

    engine = config.getoption("engine")
    if not engine:
        return None
    model = config.getoption("model")
    if not model:
        raise UserError("--engine needs --model (factory:NAME, shape:NAME, path:DIR or hf:ID)")
    layouts = [name for item in config.getoption("layout") for name in item.split(",") if name] or ["tp1"]
    settings = {}
    if config.getoption("engine_command"):
        settings["command"] = config.getoption("engine_command")
    if config.getoption("engine_device"):
        settings["device"] = config.getoption("engine_device")
    name = model.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1]
    return matrices.parse({"engines": {engine: settings}, "models": {name: {"source": model}}, "layouts": layouts},
                          file="<command line>", default_name="one-off")


def _check_executable(case) -> None:
    import shutil

    executable = case.engine.command[0]
    if not (shutil.which(executable) or (os.path.isfile(executable) and os.access(executable, os.X_OK))):
        raise UserError(f"case {case.id}: engine executable {executable!r} not found; install the engine or set "
                        f"`command` for {case.engine.name} in the matrix")


def pytest_generate_tests(metafunc):
    if "llm" not in metafunc.fixturenames:
        return
    session = configured_session(metafunc.config)
    if session.attach:
        metafunc.parametrize("llm", [session.attach], ids=[session.attach.id], indirect=True, scope="session")
    elif session.cases:
        metafunc.parametrize("llm", session.cases, ids=[c.id for c in session.cases], indirect=True,
                             scope="session")
    else:  # collected to be refused in pytest_collection_modifyitems (or listed by --collect-only)
        metafunc.parametrize("llm", [None], ids=["no-engine"], indirect=True, scope="session")


NO_ENGINE = ("{count} test(s) need an engine server and none was given: pass --matrix FILE (e.g. "
             "matrices/cpu-smoke.yaml), --engine/--model/--layout, or --llm-url URL --llm-model ID")


def pytest_collection_modifyitems(config, items):
    without_engine = [i for i in items if getattr(i, "callspec", None) and "llm" in i.callspec.params
                      and i.callspec.params["llm"] is None]
    if without_engine and not config.option.collectonly:
        # A CI job that forgot its matrix must fail, not go green with every test skipped.
        pytest.exit(f"llmconform: {NO_ENGINE.format(count=len(without_engine))}", returncode=2)
    for item in items:
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("llm") if callspec else None
        if case is None:
            continue
        item.add_marker(pytest.mark.engine)
        from llmconform.serving.llm import LLM

        if isinstance(case, LLM):
            continue
        # Here, not in a fixture: the session-scoped `llm` fixture would start the case's server first.
        for mark in item.iter_markers("skip_case_if"):
            if mark.args[0](case):
                item.add_marker(pytest.mark.skip(reason=mark.kwargs["reason"]))
        item.add_marker(pytest.mark.xdist_group(case.id))
        item.add_marker(getattr(pytest.mark, case.engine.name))
        if case.layout.nodes > 1:
            item.add_marker(pytest.mark.multinode)
        if case.engine.device == "cuda":
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session")
def llm(request):
    """A ready server for the case this test is parametrized with (or the attached one)."""
    from llmconform.reports import run_identity
    from llmconform.serving.llm import LLM

    param = request.param
    if isinstance(param, LLM):
        yield param
        return
    session = configured_session(request.config)
    case = param
    if case.id in session.unfit:
        pytest.skip(f"{case.id}: {session.unfit[case.id]}")
    # pytest_configure set these up for a session with cases
    assert session.pool is not None and session.report_dir is not None and session.progress is not None
    server = session.pool.start(case)
    if server.version and case.engine.version and not run_identity.same_release(server.version, case.engine.version):
        warnings.warn(f"{case.id}: the server reports {case.engine.name} {server.version}, the matrix says "
                      f"{case.engine.version}; results carry the server's version", UserWarning, stacklevel=1)
    handle = LLM(base_url=server.base_url, model=server.model, engine=case.engine.name,
                 engine_version=server.version or case.engine.version, report_dir=session.report_dir, case=case,
                 server=server, api_key=case.api_key, progress=session.progress)
    try:
        yield handle
    finally:
        session.pool.stop(case.id)


SHIPPED_SUITES = Path(__file__).resolve().parent.parent / "suites"


def result_id(item) -> str:
    """A test's id in results.jsonl. For the shipped suites `suites/<file>::<test>`, wherever they were collected from
    (a source tree, an installed package; pytest's node id depends on the rootdir), so that `llmconform compare`,
    which matches tests by this id, can compare any two runs; for other tests pytest's node id."""
    try:
        relative = item.path.resolve().relative_to(SHIPPED_SUITES)
    except ValueError:
        return item.nodeid
    return f"suites/{relative.as_posix()}::{item.nodeid.split('::', 1)[1]}"


class ResultsWriter:
    """One JSON line per test outcome into the report dir (controller side), for the reports built from it."""

    def __init__(self, path: Path):
        self.file = open(path, "a")  # noqa: SIM115 - open for the whole session, closed in pytest_sessionfinish

    def pytest_runtest_logreport(self, report):
        if report.when != "call" and not (report.failed or report.skipped):
            return
        record = {"nodeid": getattr(report, "result_id", report.nodeid), "when": report.when, "outcome": report.outcome,
                  "duration_s": round(report.duration, 3), "properties": dict(report.user_properties)}
        if hasattr(report, "wasxfail"):
            record["xfail_reason"] = report.wasxfail
        if report.skipped and isinstance(report.longrepr, tuple):
            record["skip_reason"] = report.longrepr[2].removeprefix("Skipped: ")  # pytest prefixes it
        elif report.failed:
            record["error"] = str(report.longrepr)[-2000:]
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


@pytest.fixture(autouse=True)
def _llmconform_context(request):
    """Tag each engine test's result with its server (for the reports). An engine that failed to start, died or
    hung is reported once, with its diagnosis, by the test that met it; its case's later tests are not run."""
    if "llm" not in request.fixturenames:
        yield
        return
    from llmconform.serving.server import EngineStartError

    session = configured_session(request.config)
    case = _case_of(request.node)
    if case is not None and case.id in session.dead:
        pytest.skip(f"not run: {session.dead[case.id]}")
    try:
        handle = request.getfixturevalue("llm")
    except EngineStartError as error:
        assert case is not None  # only a case's server is started
        _record_engine_failure(session, request.node.user_properties, case, str(error))
        raise
    request.node.user_properties.append(("llm", {
        "id": handle.id, "engine": handle.engine, "engine_version": handle.engine_version, "layout": handle.layout,
        "model": handle.model, "planned_version": handle.case.engine.version if handle.case else None}))
    yield
    if case is not None and handle.server is not None and case.id not in session.dead:
        death = handle.server.death()  # the test passed, but the engine is gone now
        if death:
            _record_engine_failure(session, request.node.user_properties, case, death)
            pytest.fail(death, pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each report carries the test's result id. A test that failed because its engine died or hung shows the
    engine's death (stage, diagnosis, log tail) instead of the client's connection error;
    llmconform.engines.known_failures then reads that evidence."""
    outcome = yield
    report = outcome.get_result()
    report.result_id = result_id(item)  # travels with the report from an xdist worker to the controller
    session: Session | None = session_of(item.config)
    case = _case_of(item)
    if call.when != "call" or not report.failed or case is None or session is None or session.pool is None \
            or case.id in session.dead:
        return
    server = session.pool.server(case.id)
    death = server.death() if server is not None else None
    if death:
        _record_engine_failure(session, report.user_properties, case, death)
        error_line = str(report.longrepr).strip().splitlines()[-1:] or [""]
        report.longrepr = f"{death}\n  --- the test's own error ---\n{error_line[0]}"


def _case_of(item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get("llm") if callspec else None
    if param is None:
        return None
    from llmconform.config.case import Case

    return param if isinstance(param, Case) else None


def _record_engine_failure(session: Session, properties: list, case: Case, text: str) -> None:
    """Remember the case's engine as gone (its later tests are skipped with this line) and put the failure into
    the test's results, from which the report and the terminal summary list engine failures."""
    lines = text.splitlines()
    session.dead[case.id] = lines[0]
    detail = {line.strip().split(": ", 1)[0]: line.strip().split(": ", 1)[1] for line in lines[1:3]
              if line.strip().startswith(("diagnosis: ", "log: "))}
    from llmconform.reports.report_dir import ENGINE_FAILURE

    properties.append((ENGINE_FAILURE, {"case": case.id, "what": lines[0], **detail}))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = session_of(config)
    if not state or not state.report_dir or hasattr(config, "workerinput"):
        return
    lines = state.report_dir.build()
    terminalreporter.section("llmconform", red=any(line.startswith(("ENGINE FAILURE", "INTERRUPTED"))
                                                   for line in lines))
    for line in lines:
        terminalreporter.write_line(line)


def pytest_keyboard_interrupt(excinfo):
    # From the first Ctrl-C (or SIGTERM) on, the run only finishes: teardown, then the reports. A second one must cut
    # neither short, wherever it lands, up to the process's exit.
    from llmconform.serving.server import ignore_signals, ignore_signals_through_exit

    ignore_signals("finishing the interrupted run")
    ignore_signals_through_exit()


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish has run the fixtures' teardown
def pytest_sessionfinish(session, exitstatus):
    state = session_of(session.config)
    if state and state.pool:
        state.pool.stop_all()  # servers whose fixtures did not get to finalize
    if state and state.report_dir and exitstatus == pytest.ExitCode.INTERRUPTED \
            and not hasattr(session.config, "workerinput"):
        state.report_dir.mark_interrupted(f"interrupted by {state.interrupted_by} "
                                          f"at {time.strftime('%Y-%m-%d %H:%M:%S')}")
    if state and state.results:
        state.results.close()
        state.results = None


def pytest_report_header(config):
    state = session_of(config)
    if not state:
        return None
    if state.attach:
        return f"llmconform: attached to {state.attach.base_url} (model {state.attach.model})"
    if state.cases:
        lines = [f"llmconform: {len(state.cases)} case(s), report dir {state.report_dir}"]
        lines += [f"  {c.id}: {'skip: ' + state.unfit[c.id] if c.id in state.unfit else 'runs here'}"
                  for c in state.cases]
        return lines
    return None

