"""The client commands as a user runs them: real child processes against a real API server."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import anyio
import pytest
import trustme
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tei_reconciler.api.errors import error_response
from tei_reconciler.drivers.logrotate import rotate_log
from tei_reconciler.planner.phase import Phase
from tei_reconciler.planner.status import Condition, ExitInfo

from .harness import argv, cli, client_env, instances, running, served

pytestmark = pytest.mark.anyio


async def test_get_lists_every_instance_with_its_phase_and_readiness(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha", "beta"])) as server:
        server.observe("alpha", Phase.RUNNING)
        done = await cli("get", "--server", server.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "PHASE",
        "READY",
        "TRAFFIC",
        "MODEL",
        "PORT",
        "GPU",
        "RESTARTS",
        "AGE",
    ]
    assert lines[1].split()[:7] == ["alpha", "Running", "1/1", "-", "hash/384", "8081", "none"]
    assert lines[2].split()[:6] == ["beta", "Pending", "0/1", "-", "hash/384", "8082"]


async def test_get_with_json_output_prints_the_apis_instance_body(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.STARTING)
        done = await cli("get", "alpha", "-o", "json", "--server", server.url)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["name"], body["phase"], body["ready"]) == ("alpha", "Starting", False)


async def test_get_on_an_empty_state_says_there_are_no_instances(tmp_path: Path) -> None:
    async with served(tmp_path) as server:
        done = await cli("get", "--server", server.url)
    assert (done.returncode, done.stdout) == (0, "No instances.\n")


async def test_describe_shows_status_conditions_spec_and_events(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        ready = Condition(
            type="Ready",
            status="True",
            reason="ProbeSucceeded",
            message="",
            last_transition_time=1.0,
        )
        server.observe("alpha", Phase.RUNNING, restarts=2, conditions=(ready,))
        server.store.record_event("alpha", "Warning", "BackOff", "restarting in 10 s", 5.0)
        done = await cli("describe", "alpha", "--server", server.url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Name:" in out
    assert "alpha" in out
    assert "Restarts:" in out
    assert "PID:" in out
    assert "4242" in out
    assert "ProbeSucceeded" in out
    assert 'model_id = "hash/384"' in out
    assert "BackOff" in out
    assert "restarting in 10 s" in out


async def test_a_missing_instance_prints_the_servers_error_code_and_exits_1(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as server:
        done = await cli("describe", "ghost", "--server", server.url)
    assert done.returncode == 1
    assert done.stderr == "error: INSTANCE_NOT_FOUND: instance 'ghost' not found\n"


async def test_a_reconciler_that_is_not_running_gives_a_clear_message_and_exit_2() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    done = await cli("get", "--server", url)
    assert done.returncode == 2
    assert f"cannot reach tei-reconciler at {url}: is `tei-reconciler run` running?" in done.stderr


async def test_the_server_address_can_come_from_the_environment(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        env = {**client_env(), "TEI_RECONCILER_SERVER": server.url}
        done = await anyio.run_process(argv("get", "-o", "json"), check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert [i["name"] for i in json.loads(done.stdout)] == ["alpha"]


async def test_logs_tail_prints_the_last_lines(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        (server.runtime / "logs" / "alpha.log").write_text("one\ntwo\nthree\n")
        done = await cli("logs", "alpha", "--tail", "2", "--server", server.url)
        everything = await cli("logs", "alpha", "--server", server.url)
    assert (done.returncode, done.stdout) == (0, "two\nthree\n")
    assert everything.stdout == "one\ntwo\nthree\n"


async def test_logs_follow_prints_lines_as_they_are_written(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        log = server.runtime / "logs" / "alpha.log"
        log.write_text("old\nlast\n")
        async with running("logs", "alpha", "-f", "--tail", "1", "--server", server.url) as logs:
            await logs.read_until("last\n")
            with log.open("a") as f:
                f.write("fresh line\n")
            output = await logs.read_until("fresh line\n")
    assert output == "last\nfresh line\n"


async def test_logs_follow_goes_on_after_the_log_is_rotated(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        log = server.runtime / "logs" / "alpha.log"
        log.write_text("a line from before the rotation\n")
        async with running("logs", "alpha", "-f", "--server", server.url) as logs:
            await logs.read_until("before the rotation\n")
            assert rotate_log(log, max_bytes=10, backups=1)  # as the reconciler rotates it
            with log.open("a") as f:
                f.write("after\n")
            output = await logs.read_until("after\n")
    assert output == "a line from before the rotation\nafter\n"
    assert (log.parent / "alpha.log.1").read_text() == "a line from before the rotation\n"


async def test_diff_exits_0_and_prints_nothing_when_the_file_matches(tmp_path: Path) -> None:
    state = instances(["alpha"])
    (tmp_path / "mine.toml").write_text(state)
    async with served(tmp_path, state) as server:
        done = await cli("diff", str(tmp_path / "mine.toml"), "--server", server.url)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


async def test_diff_exits_1_and_shows_the_change_and_the_plan(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(instances(["alpha", "beta"]))
    async with served(tmp_path, instances(["alpha"])) as server:
        done = await cli("diff", str(tmp_path / "mine.toml"), "--server", server.url)
        unchanged = server.statefile.path.read_text()
    assert done.returncode == 1, done.stderr
    assert "+[instances.beta]" in done.stdout
    assert "plan:" in done.stdout
    assert "start beta" in done.stdout
    assert unchanged == instances(["alpha"])


async def test_diff_of_an_invalid_file_exits_2_with_the_validation_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[instances.alpha]\nmodel_id = "hash/384"\nprot = 1\n')
    async with served(tmp_path) as server:
        done = await cli("diff", str(tmp_path / "bad.toml"), "--server", server.url)
    assert done.returncode == 2
    assert done.stderr.startswith("error: VALIDATION_ERROR: ")
    assert "3:1: instances.alpha.prot: unknown key 'prot'" in done.stderr


async def test_diff_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    async with served(tmp_path) as server:
        done = await cli("diff", str(tmp_path / "nope.toml"), "--server", server.url)
    assert done.returncode == 2
    assert "cannot read" in done.stderr


async def test_apply_replaces_the_whole_state_and_prints_the_plan(tmp_path: Path) -> None:
    new = "# ours\n" + instances(["beta"])
    (tmp_path / "mine.toml").write_text(new)
    async with served(tmp_path, instances(["alpha"])) as server:
        done = await cli("apply", "-f", str(tmp_path / "mine.toml"), "--server", server.url)
        again = await cli("apply", "-f", str(tmp_path / "mine.toml"), "--server", server.url)
        written = server.statefile.path.read_text()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("state applied (revision ")
    assert "start beta" in done.stdout
    assert written == new
    assert (again.returncode, again.stdout.split("(")[0]) == (0, "state unchanged ")


async def test_apply_on_a_stale_revision_writes_nothing_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(instances(["beta"]))
    async with served(tmp_path, instances(["alpha"])) as server:
        _, seen = server.statefile.read()
        server.statefile.path.write_text(instances(["alpha", "gamma"]))  # someone else's edit
        done = await cli(
            "apply", "-f", str(tmp_path / "mine.toml"), "--revision", seen, "--server", server.url
        )
        kept = server.statefile.path.read_text()
    assert done.returncode == 1
    assert done.stderr.startswith("error: REVISION_MISMATCH: ")
    assert "nothing was written" in done.stderr
    assert "tei-reconciler diff" in done.stderr
    assert kept == instances(["alpha", "gamma"])


async def test_stop_start_and_restart_edit_the_desired_state(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        stopped = await cli("stop", "alpha", "--server", server.url)
        after_stop = server.spec("alpha").state
        started = await cli("start", "alpha", "--server", server.url)
        after_start = server.spec("alpha").state
        restarted = await cli("restart", "alpha", "--server", server.url)
        restarted_at = server.spec("alpha").restarted_at
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == "instance/alpha stopped (desired stopped, phase Stopped)\n"
    assert (after_stop, after_start) == ("stopped", "running")
    assert started.stdout.startswith("instance/alpha started (desired running")
    assert restarted.returncode == 0
    assert restarted.stdout.startswith("instance/alpha restarted")
    assert restarted_at is not None


async def test_delete_removes_the_instance_and_a_second_delete_is_not_found(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, instances(["alpha", "beta"])) as server:
        first = await cli("delete", "alpha", "--server", server.url)
        second = await cli("delete", "alpha", "--server", server.url)
        left = set(server.statefile.load().instances)
    assert (first.returncode, first.stdout) == (0, "instance/alpha deleted\n")
    assert second.returncode == 1
    assert "INSTANCE_NOT_FOUND" in second.stderr
    assert left == {"beta"}


async def test_wait_prints_each_phase_until_the_instance_is_ready(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.STARTING, reason="Probing", message="model loading")
        async with running("wait", "alpha", "--for", "ready", "--server", server.url) as waiter:
            await waiter.read_until("Starting (Probing: model loading)")
            server.observe("alpha", Phase.RUNNING)
            status = await waiter.finish()
    assert status == 0, waiter.errors
    assert "instance/alpha: Running" in waiter.output
    assert waiter.output.rstrip().endswith("instance/alpha condition met (ready)")


async def test_wait_ignores_a_ready_status_of_an_older_spec(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        old = server.observe("alpha", Phase.RUNNING)
        server.statefile.set_field("alpha", "max_batch_tokens", 512)  # a change not yet acted on
        async with running("wait", "alpha", "--server", server.url) as waiter:
            await waiter.read_until("instance/alpha: Running")
            server.observe("alpha", Phase.STARTING, spec=server.spec("alpha"))
            await waiter.read_until("instance/alpha: Starting")
            server.observe("alpha", Phase.RUNNING, spec=server.spec("alpha"))
            status = await waiter.finish()
    assert old.ready
    assert status == 0, waiter.errors
    assert "condition met (ready)" in waiter.output


async def test_wait_gives_up_after_the_timeout_naming_the_last_phase(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.CRASH_LOOP_BACK_OFF, reason="BackOff")
        done = await cli("wait", "alpha", "--timeout", "0.5", "--server", server.url)
    assert done.returncode == 1
    assert "timed out after 0.5s waiting for instance/alpha to be ready" in done.stderr
    assert "last seen: CrashLoopBackOff (BackOff)" in done.stderr


async def test_the_client_speaks_https_with_the_given_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with served(tmp_path, instances(["alpha"]), ssl=context) as server:
        url = server.url.replace("http://", "https://")
        trusted = await cli("get", "--server", url, "--cacert", str(tmp_path / "ca.pem"))
        untrusted = await cli("get", "--server", url)
    assert trusted.returncode == 0, trusted.stderr
    assert "alpha" in trusted.stdout
    assert untrusted.returncode == 2
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


class RequireToken:
    """Stands in for the auth middleware: a bearer token, or 401 in the API's envelope."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {self.token}".encode():
                response = error_response(401, "UNAUTHENTICATED", "a bearer token is required")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def test_a_token_is_sent_as_a_bearer_header(tmp_path: Path) -> None:
    auth = [Middleware(RequireToken, token="s3cret")]
    async with served(tmp_path, instances(["alpha"]), middleware=auth) as server:
        refused = await cli("get", "--server", server.url)
        allowed = await cli("get", "--server", server.url, "--token", "s3cret")
    assert refused.returncode == 1
    assert refused.stderr == "error: UNAUTHENTICATED: a bearer token is required\n"
    assert allowed.returncode == 0, allowed.stderr
    assert "alpha" in allowed.stdout


async def test_wait_for_deleted_returns_once_the_instance_is_gone(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.STOPPING)
        async with running("wait", "alpha", "--for", "deleted", "--server", server.url) as waiter:
            await waiter.read_until("instance/alpha: Stopping")
            server.statefile.remove_instance("alpha")
            server.store.forget("alpha")
            status = await waiter.finish()
    assert status == 0, waiter.errors
    assert waiter.output.rstrip().endswith("instance/alpha condition met (deleted)")


async def test_describe_shows_the_last_state_with_the_last_lines_the_process_wrote(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        last = ExitInfo(
            code=None,
            signal=9,
            at=1_700_000_000.0,
            reason="Killed",
            last_lines=("INFO Warming up model", "ERROR CUDA out of memory"),
        )
        server.observe("alpha", Phase.CRASH_LOOP_BACK_OFF, last_exit=last)
        done = await cli("describe", "alpha", "--server", server.url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Last State:" in out
    assert "Signal:" in out
    assert "SIGKILL (9)" in out
    assert "killed by SIGKILL (signal 9), a signal the reconciler did not send" in out
    assert "    ERROR CUDA out of memory" in out
