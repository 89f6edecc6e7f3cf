"""The fault suite (issue 8, "Proof"): a 2,000-contact campaign on the
production stack (the Procfile's web, worker and scheduler on a private
PostgreSQL and RabbitMQ, production timings), a fault injected once ~30% of
it is final, and then:

* every contact final (sent, or failed with a reason) within 60 s of the
  fault's end;
* 0 lost;
* 0 duplicates, counted by the fake gateway, for the database and broker
  faults and the scheduler kill; for kill -9 of workers, no more than the
  sends that can be in flight (threads of the killed processes: one
  process's, then all of them, as both kills happen in one run); for the
  gateway's faults, no more than the sends it hung (their answer never came,
  so they are ambiguous);
* no process restarted by hand: the harness only plays the process manager
  of the Procfile's top-level processes (see tests/faults/procfile.py).

Each scenario prints one line of figures (``-s``) and the session ends with
a table of them all.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.fakes import digits
from tests.faults.harness import CAMPAIGN_SIZE, FINAL_WITHIN, FaultRun
from tests.faults.procfile import WORKER_PROCESSES, WORKER_THREADS
from tests.faults.services import alive, descendants_of

pytestmark = [
    pytest.mark.faults, pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.timeout(420),
    # One xdist worker runs the whole suite: its private servers are set up once per worker.
    pytest.mark.xdist_group("faults"),
]

#: RabbitMQ and PostgreSQL stay down this long.
OUTAGE_SECONDS = 15.0
#: The gateway's faults: 500 to this fraction of sends, and the first
#: GATEWAY_HANGS other sends hung, for GATEWAY_ERRORS_SECONDS; then
#: connections refused for GATEWAY_REFUSE_SECONDS.
GATEWAY_500_FRACTION = 0.30
GATEWAY_HANGS = 5
GATEWAY_ERRORS_SECONDS = 10.0
GATEWAY_REFUSE_SECONDS = 20.0
#: The small campaign posted while RabbitMQ is down.
SMALL_CAMPAIGN = 20
#: RestartSec of the schedulers in the leader scenario: longer than the
#: standby needs to take over (it asks for the lock every 5 s).
SCHEDULER_RESTART_SECONDS = 30.0
#: How long after the kill the worker command has to replace a killed worker process.
REPLACE_WITHIN = 30.0
#: The whole worker group is killed once this fraction of the campaign is
#: final (one worker process was killed at FAULT_AT), or SECOND_KILL_WAIT
#: seconds after the first kill if the campaign stalled.
GROUP_KILL_AT = 0.55
SECOND_KILL_WAIT = 60.0


def _finish(run: FaultRun, tmp_path: Path, *, duplicate_bound: int, before_deciding=None) -> None:
    """Wait (at most 60 s from the fault's end), take the figures, print them, assert."""
    seconds = run.wait_all_final()
    run.measure(seconds=seconds, duplicate_bound=duplicate_bound)
    if before_deciding is not None:
        before_deciding(run)
    figures = run.finish(tmp_path / "figures.json")
    assert figures.passed, f"{run.name}: " + "; ".join(figures.problems) + f"\n{run.stack.logs()}"


# --- 1. kill -9 of workers -------------------------------------------------------

def _wait_replaced(run: FaultRun, killed: int, before: int) -> bool:
    """Whether the worker command put a new process in place of ``killed``
    by itself (its top-level process never exited) within REPLACE_WITHIN."""
    top = run.stack.managed["worker"]
    deadline = time.monotonic() + REPLACE_WITHIN
    while time.monotonic() < deadline and not top.restarts:
        run.check_tracked()
        now = run.stack.worker_processes()
        if len(now) >= before and killed not in now:
            return True
        time.sleep(0.2)
    return False


def test_kill_9_worker_process_then_worker_group(fault_run, tmp_path):
    """kill -9 of one process under the worker command at ~30%: the command
    replaces it by itself (nothing is restarted, by the harness or anyone).
    Then, at ~55%, kill -9 of the worker command and every process under it
    (a supervisor too): the Procfile runs under a process manager (honcho,
    systemd with Restart=always), and the harness plays that role for the
    top-level process only, starting the Procfile's worker line again.

    Both kills are in one run (one campaign) to keep the suite within its
    time budget; the figures say what each did (``kill1_*``, ``kill2_*``)."""
    run = fault_run()
    campaign = run.post(run.new_campaign(CAMPAIGN_SIZE))
    assert campaign.http_status == 200, campaign.http_error
    top = run.stack.managed["worker"]
    run.wait_until_final_fraction(campaign)

    # 1. one worker process
    before = run.stack.worker_processes()
    run.fault_begins()
    flying = run.sending_ids()
    run.track("kill1_in_flight", flying)
    killed = run.stack.kill_worker_process()
    in_flight = set(flying) | set(run.sending_ids())  # claimed just before the kill, too
    replaced = _wait_replaced(run, killed, len(before))
    restarts_after_kill1 = top.restarts
    reached = run.wait_until_final_fraction(campaign, GROUP_KILL_AT, timeout=SECOND_KILL_WAIT, fail=False)
    run.figures.details.update(kill1_in_flight=len(flying), kill1_replaced_by_worker_command=replaced,
                               kill1_worker_command_exited=bool(restarts_after_kill1))
    if restarts_after_kill1:
        run.figures.problems.append(
            f"the worker command exited after one of its processes was killed (exit codes "
            f"{[code for _, _, code in top.exits]}); only the process manager's restart brought it back")
    elif not replaced:
        run.figures.problems.append(f"the killed worker process was not replaced within {REPLACE_WITHIN:g}s "
                                    f"({len(run.stack.worker_processes())} of {len(before)} processes)")
    if reached is None:
        run.figures.problems.append(f"after the single-process kill the campaign did not reach "
                                    f"{GROUP_KILL_AT:.0%} final in {SECOND_KILL_WAIT:g}s: {run.counts()}")

    # 2. the whole worker group
    flying = run.sending_ids()
    run.track("kill2_in_flight", flying)
    killed = run.stack.kill_group("worker")
    run.fault_ends()
    in_flight |= set(flying) | set(run.sending_ids())
    run.figures.details.update(kill2_in_flight=len(flying), kill2_processes_killed=len(killed))
    # At most what each kill could have in flight: one process's threads, then all of them.
    _finish(run, tmp_path, duplicate_bound=WORKER_THREADS + WORKER_PROCESSES * WORKER_THREADS,
            before_deciding=lambda run: _judge_kills(run, in_flight))


def _judge_kills(run: FaultRun, in_flight: set[int]) -> None:
    """The sends in flight at the first kill were final within 60 s of it too
    (the run's deadline counts from the second kill), and only a send in
    flight at a kill went out twice."""
    after = run.figures.details.get("kill1_in_flight_final_after")
    if after is None or after > FINAL_WITHIN:
        run.figures.problems.append(f"the sends in flight at the single-process kill were not final within "
                                    f"{FINAL_WITHIN:g}s of it ({after if after is not None else 'still open'})")
    phones = {digits(phone) for (phone,) in run.sql("SELECT phone FROM contact WHERE id = ANY(%s)",
                                                      (sorted(in_flight),))} if in_flight else set()
    twice = {number for number, count in run.gateway.accepted.items() if count > 1}
    run.figures.details["duplicates_not_in_flight"] = len(twice - phones)
    if twice - phones:
        run.figures.problems.append(f"{len(twice - phones)} contacts not in flight at either kill were sent twice")


# --- 2. RabbitMQ down --------------------------------------------------------------

def test_rabbitmq_stopped_15s(fault_run, fault_services, tmp_path):
    """RabbitMQ stopped for 15 s mid-campaign, then started again; a second
    campaign posted during the outage is accepted (not a 500) and delivered."""
    run = fault_run()
    campaign = run.post(run.new_campaign(CAMPAIGN_SIZE))
    assert campaign.http_status == 200, campaign.http_error
    run.wait_until_final_fraction(campaign)

    run.fault_begins()
    fault_services.rabbitmq.stop()
    stopped = time.monotonic()
    small = run.new_campaign(SMALL_CAMPAIGN, start=CAMPAIGN_SIZE + 1000)
    poster = threading.Thread(target=run.post, args=(small,), kwargs={"timeout": 60}, daemon=True)
    poster.start()
    time.sleep(max(0.0, stopped + OUTAGE_SECONDS - time.monotonic()))  # the outage: time must pass
    fault_services.rabbitmq.start()  # the node takes a few seconds more to accept connections
    run.fault_ends()
    poster.join(timeout=70)

    run.figures.details.update(post_during_outage=small.http_status or small.http_error[:80],
                               post_seconds=round(small.http_seconds, 1),
                               outage_seconds=round(run.fault_ended - stopped, 1),
                               rabbitmq_boot_seconds=round(fault_services.rabbitmq.boot_seconds, 1))
    if small.http_status is None or small.http_status >= 500:
        run.figures.problems.append(f"the POST during the outage was answered {small.http_status} "
                                    f"{small.http_error[:200]!r}")
    _finish(run, tmp_path, duplicate_bound=0)


# --- 3. PostgreSQL restarted -------------------------------------------------------

def test_postgres_restarted(fault_run, fault_services, tmp_path):
    """PostgreSQL stopped (fast: every connection closed) for 15 s mid-campaign, then started."""
    run = fault_run()
    campaign = run.post(run.new_campaign(CAMPAIGN_SIZE))
    assert campaign.http_status == 200, campaign.http_error
    run.wait_until_final_fraction(campaign)

    run.fault_begins()
    fault_services.postgres.restart(OUTAGE_SECONDS)
    run.fault_ends()
    _finish(run, tmp_path, duplicate_bound=0)


# --- 4. the scheduler leader killed ---------------------------------------------

def _scheduler_holding_lock(run: FaultRun, postgres_port: int) -> str | None:
    """The scheduler process holding a PostgreSQL advisory lock (the leader):
    the lock's backend -> its client port -> the socket of one of our processes."""
    rows = run.try_sql("SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                       "WHERE l.locktype = 'advisory' AND l.granted AND a.client_port IS NOT NULL")
    if not rows:
        return None
    inodes = _socket_inodes({port for (port,) in rows}, postgres_port)
    for name, item in run.stack.managed.items():
        if not name.startswith("scheduler") or item.process is None or not alive(item.process.pid):
            continue
        for pid in [item.process.pid, *descendants_of(item.process.pid)]:
            if _process_sockets(pid) & inodes:
                return name
    return None


def _socket_inodes(local_ports: set[int], remote_port: int) -> set[str]:
    """Inodes of TCP sockets from one of ``local_ports`` to ``remote_port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) in local_ports and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                found.add(inode)
    return found


def _process_sockets(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def test_scheduler_leader_killed(fault_run, fault_services, tmp_path):
    """Two schedulers (the second stands by); kill -9 of the leader mid-campaign.
    A scheduler leads again, and the campaign goes on."""
    run = fault_run(schedulers=2)
    port = fault_services.postgres.port
    # The process manager starts a killed scheduler again only after this
    # (systemd RestartSec=): the standby, not the restarted one, must take over.
    for name, item in run.stack.managed.items():
        if name.startswith("scheduler"):
            item.restart_seconds = SCHEDULER_RESTART_SECONDS
    campaign = run.post(run.new_campaign(CAMPAIGN_SIZE))
    assert campaign.http_status == 200, campaign.http_error
    run.wait_until_final_fraction(campaign)
    deadline = time.monotonic() + 30
    leader = _scheduler_holding_lock(run, port)
    while leader is None and time.monotonic() < deadline:
        time.sleep(0.2)
        leader = _scheduler_holding_lock(run, port)
    assert leader, f"no scheduler holds the leader lock\n{run.stack.logs()}"

    run.fault_begins()
    run.stack.kill_group(leader)
    run.fault_ends()
    killed_at = time.monotonic()
    new_leader, took_over = None, None
    while time.monotonic() < killed_at + FINAL_WITHIN:
        new_leader = _scheduler_holding_lock(run, port)
        if new_leader:
            took_over = time.monotonic() - killed_at
            break
        time.sleep(0.2)
    run.figures.details.update(leader=leader, new_leader=new_leader,
                               leader_again_after=round(took_over, 1) if took_over is not None else None,
                               restarted_by_manager=run.stack.managed[leader].restarts)
    if new_leader is None:
        run.figures.problems.append(f"no scheduler led within {FINAL_WITHIN:g}s of the leader's kill")
    elif new_leader == leader:
        run.figures.problems.append(f"the standby never took over: {leader} led again once restarted")
    _finish(run, tmp_path, duplicate_bound=0)


# --- 5. the gateway misbehaves -----------------------------------------------------

def test_gateway_errors_hangs_and_refusals(fault_run, tmp_path):
    """The gateway answers 500 to 30% of sends and hangs on some (accepted,
    never answered) for 10 s, then refuses connections for 20 s."""
    run = fault_run()
    campaign = run.post(run.new_campaign(CAMPAIGN_SIZE))
    assert campaign.http_status == 200, campaign.http_error
    run.wait_until_final_fraction(campaign)

    gateway = run.gateway
    run.fault_begins()
    gateway.fail_fraction(GATEWAY_500_FRACTION)
    gateway.hang_sends(GATEWAY_HANGS)
    time.sleep(GATEWAY_ERRORS_SECONDS)  # the fault lasts this long: time must pass
    gateway.clear_faults()
    gateway.refuse_connections()
    time.sleep(GATEWAY_REFUSE_SECONDS)  # likewise
    gateway.listen_again()
    run.fault_ends()
    # A hung send was accepted but never answered: it may be sent again
    # unless the sender checks with the gateway first (Evolution can tell:
    # chat/findMessages, which the fake answers).
    _finish(run, tmp_path, duplicate_bound=gateway.hung)
