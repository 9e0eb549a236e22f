"""The ``oddstream`` command: the composition root. Settings are built here, once per process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from oddstream.errors import OddstreamError
from oddstream.settings import Settings, load_settings

app = typer.Typer(
    help="oddstream: event streaming for betting and prediction markets.\n\n"
    "Settings come from ODDSTREAM_* environment variables (see docs/operations.md).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
webhook_app = typer.Typer(help="Webhook endpoints: register one, or run a local receiver.")
broker_app = typer.Typer(help="The local single-node Kafka broker (KRaft), for development.")
registry_app = typer.Typer(help="A local Schema Registry (Apicurio 2.6, Confluent API), for development.")
app.add_typer(webhook_app, name="webhook")
app.add_typer(broker_app, name="broker")
app.add_typer(registry_app, name="registry")


def settings() -> Settings:
    s = load_settings()
    level = {"warn": "WARNING", "crit": "CRITICAL"}.get(s.log_level, s.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2"):  # one line per request (`sql`, the registry client) is noise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return s


def prepare(s: Settings) -> None:
    """Every role may be first: make sure the topics exist."""
    from oddstream.kafka.admin import ensure_topics

    ensure_topics(s)


@app.command()
def up(
    simulate: Annotated[bool, typer.Option(help="Also run the market simulator.")] = True,
    schema_registry: Annotated[
        bool,
        typer.Option(
            help="Write Confluent frames through a Schema Registry: ODDSTREAM_SCHEMA_REGISTRY_URL's, "
            "or a local Apicurio registry started (and stopped) with the stack."
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=12,
            help="Worker processes in the one consumer group (the partitions are split between them; "
            "worker i serves /metrics on ODDSTREAM_WORKER_METRICS_PORT + 10(i-1)).",
        ),
    ] = 1,
) -> None:
    """Start everything on this machine: Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set), embedded
    ClickHouse, worker, gateway, api, dispatcher, a demo webhook receiver and the simulator."""
    from oddstream.stack import run_stack

    run_stack(settings(), simulate=simulate, schema_registry=schema_registry, workers=workers)


@app.command()
def status(
    output: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """Each role of the running `oddstream up`: pid, state, uptime, restarts, consumer lag."""
    import time

    from oddstream.kafka.lag import group_lag, role_groups
    from oddstream.stack import status_path

    s = settings()
    path = status_path(s)
    if not path.exists():
        raise OddstreamError(f"no `oddstream up` is running for {s.data_dir} ({path} does not exist)")
    state = json.loads(path.read_text())
    groups = role_groups(s)
    rows = []
    for role, info in state["roles"].items():
        alive = info["pid"] is not None and _pid_alive(info["pid"])
        group = groups.get(role.split("-", 1)[0])  # worker-2 is in the worker group (the group's lag)
        rows.append(
            {
                "role": role,
                "pid": info["pid"],
                "state": info["state"] if alive or info["state"] != "running" else "gone",
                "uptime_s": round(time.time() - info["started"], 1) if alive else None,
                "restarts": info["restarts"],
                "last_exit": info["last_exit"],
                "lag": group_lag(s, *group) if group else None,
            }
        )
    supervisor_alive = _pid_alive(state["supervisor"])
    if output == "json":
        typer.echo(json.dumps({"supervisor": state["supervisor"], "alive": supervisor_alive, "roles": rows}))
        return
    typer.echo(f"oddstream up (pid {state['supervisor']}, {'running' if supervisor_alive else 'GONE'})")
    typer.echo(f"{'role':<11} {'pid':>7} {'state':<10} {'uptime':>9} {'restarts':>8} {'lag':>9}")
    for r in rows:
        uptime = f"{r['uptime_s']:.0f} s" if r["uptime_s"] is not None else "-"
        lag = f"{r['lag']:,}" if r["lag"] is not None else "-"
        pid = r["pid"] or "-"
        typer.echo(f"{r['role']:<11} {pid:>7} {r['state']:<10} {uptime:>9} {r['restarts']:>8} {lag:>9}")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. An exited process its parent has not reaped yet (a zombie: `up`
    reaps its roles once a round) has stopped, though signals still reach its pid."""
    import os
    from pathlib import Path

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no procfs (macOS): the signal's answer stands
        return True
    return state not in ("Z", "X")


@app.command()
def simulate(
    events: Annotated[
        int | None, typer.Option(help="Stop after this many events (default: run forever).")
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(help="Do not pace to the wall clock; event times stay spaced at the rate."),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress display.")] = True,
    out_of_order: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Fraction of quotes, bets and system events delivered late."),
    ] = 0.0,
    max_delay_ms: Annotated[
        int, typer.Option(min=0, help="Largest delay (event time) of an out-of-order event.")
    ] = 90_000,
) -> None:
    """Publish a seeded simulation of markets, bookmakers and bettors (ODDSTREAM_SIMULATOR_*)."""
    from oddstream.simulator.run import run_simulation

    s = settings()
    prepare(s)
    sent = run_simulation(
        s,
        events=events,
        realtime=not fast,
        show_progress=progress,
        out_of_order=out_of_order,
        max_delay_ms=max_delay_ms,
    )
    typer.echo(f"{sent} events acknowledged by Kafka")


@app.command()
def worker() -> None:
    """Run the stream worker (Faust): event-time window analytics, late events, dead letters."""
    from consumers.worker.app import run_worker

    s = settings()
    prepare(s)
    run_worker(s)


@app.command()
def store() -> None:
    """Run the store: sinks derived topics into ClickHouse and serves read-only SQL over HTTP.
    With embedded chDB this is the only process that opens the data directory."""
    from consumers.store.service import serve

    s = settings()
    prepare(s)
    _run(serve(s))


@app.command()
def gateway() -> None:
    """Run the WebSocket gateway (ws://host:port/ws)."""
    from gateway.server import run_gateway

    s = settings()
    prepare(s)
    _run(run_gateway(s))


@app.command()
def api() -> None:
    """Run the HTTP API: POST /v1/events (ingest), /v1/endpoints (webhooks), /openapi.json."""
    from gateway.api.app import run_api

    s = settings()
    prepare(s)
    run_api(s)


@app.command()
def dispatcher() -> None:
    """Run the webhook dispatcher (Standard Webhooks signatures, retries with backoff)."""
    from consumers.dispatcher.service import check_master_secret, run_dispatcher

    s = settings()
    check_master_secret(s)  # before anything else: a clear refusal, exit 2
    prepare(s)
    _run(run_dispatcher(s))


@app.command()
def replay(
    name: Annotated[
        str | None, typer.Option(help="Name of the fresh namespace (default: r<UTC timestamp>).")
    ] = None,
    compare: Annotated[bool, typer.Option(help="Compare the rebuilt tables with the live ones.")] = True,
    progress: Annotated[bool, typer.Option(help="Show the progress display.")] = True,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the live stack to catch up with the replay's input.")
    ] = 120.0,
) -> None:
    """Rebuild every final window table from offset 0 of the source topics into a fresh
    namespace, then compare it with what is live: exit 1 if a settled row differs, is missing
    or is extra (rows newer than the replay's input are reported as open, not counted)."""
    from consumers.worker import replay as r

    s = settings()
    rebuilt, target = r.replay(s, name or r.default_name(), show_progress=progress)
    typer.echo(f"replayed {rebuilt.records:,} records ({rebuilt.rejected:,} rejected) into {rebuilt.target}")
    tables = r.compared_tables(s.specs())
    digests = r.digests(r.store_reader(target), tables)
    for table in tables:
        typer.echo(f"  {table:<20} {rebuilt.rows.get(table, 0):>9,} rows  digest {digests[table]}")
    if not compare:
        return
    lagging = r.wait_for_live(s, rebuilt.ends, wait)
    if lagging:
        typer.echo(f"note: {lagging}; rows it has not written yet show as differences", err=True)
    horizon = r.Horizon.of(rebuilt, s)
    typer.echo(f"  horizon (rows settled up to, per source topic): {horizon.describe()}")
    results = r.compare(r.store_reader(target), r.live_reader(s), tables, horizon)
    for c in results:
        verdict = "equal" if c.ok else "DIFFERENT"
        typer.echo(
            f"  {c.table:<20} {verdict:<9} {c.equal:>7,} equal, {c.different:,} differ, "
            f"{c.only_live:,} only live, {c.only_replayed:,} only replayed, {c.open:,} open"
        )
    if not all(c.ok for c in results):
        for c in results:
            for example in c.examples:
                typer.echo(f"  {example}", err=True)
        typer.echo("the replay differs from the live tables", err=True)
        raise typer.Exit(1)
    typer.echo("the replay equals the live tables (rows past its input's horizon: open)")


@app.command()
def sql(
    query: Annotated[
        str, typer.Argument(help='A read-only query, e.g. "SELECT count() FROM odds_windows_1m".')
    ],
    output: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """Run read-only SQL. Embedded ClickHouse: through the store's endpoint (the store owns the
    data directory). A ClickHouse server: directly."""
    s = settings()
    if s.clickhouse_is_embedded:
        import httpx

        try:
            headers = {}
            if s.sql_token is not None:
                headers["Authorization"] = f"Bearer {s.sql_token.get_secret_value()}"
            response = httpx.post(f"{s.sql_endpoint}/sql", content=query, headers=headers, timeout=120)
        except httpx.HTTPError as exc:
            raise OddstreamError(
                f"the store is not reachable at {s.sql_endpoint} ({exc}); is `oddstream up` running?"
            ) from exc
        answer = response.json()
        if response.status_code != 200:
            raise OddstreamError(answer.get("error", response.text))
        columns, rows = answer["columns"], answer["rows"]
    else:
        from consumers.store.clickhouse import Store

        columns, raw = Store(s.clickhouse).query(query, readonly=True)
        from schemas.jsonable import jsonable

        rows = jsonable([list(r) for r in raw])
    if output == "json":
        typer.echo(json.dumps({"columns": columns, "rows": rows}))
        return
    typer.echo("\t".join(columns))
    for row in rows:
        typer.echo("\t".join("NULL" if v is None else str(v) for v in row))


def _api(method: str, path: str, body: Any = None) -> Any:
    """One call to the HTTP API (the webhook commands manage endpoints through it, as any
    client does); its refusal, or its absence, as a clear error."""
    import httpx

    s = settings()
    headers = {"Authorization": f"Bearer {s.api_tokens[0].get_secret_value()}"} if s.api_tokens else {}
    try:
        response = httpx.request(method, f"{s.api_base}{path}", json=body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise OddstreamError(
            f"the HTTP API is not reachable at {s.api_base} ({type(exc).__name__}); "
            "start it with `oddstream api` (or `oddstream up`), or point ODDSTREAM_API_URL at it"
        ) from exc
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text[:300]}
    if response.status_code >= 400:
        raise OddstreamError(f"the API refused ({response.status_code}): {answer.get('error', answer)}")
    return answer


@webhook_app.command("add")
def webhook_add(
    url: Annotated[str, typer.Argument(help="HTTPS URL to POST deliveries to.")],
    event_type: Annotated[
        list[str], typer.Option("--event-type", help="Deliver only these types (repeat).")
    ] = [],  # noqa: B006
    every_window_update: Annotated[
        bool,
        typer.Option(help="Window events: every current update, not only each closed window's final."),
    ] = False,
    rate_limit: Annotated[int, typer.Option(help="Deliveries per second at most (0: none).")] = 0,
) -> None:
    """Register an endpoint; prints its id and its signing secret (whsec_...). Through the API."""
    body = {"url": url, "event_types": list(event_type), "every_window_update": every_window_update,
            "rate_limit": rate_limit}  # fmt: skip
    answer = _api("POST", "/v1/endpoints", body)
    typer.echo(f"endpoint {answer['endpoint_id']}\nsecret   {answer['secret']}")


@webhook_app.command("list")
def webhook_list() -> None:
    """The endpoints (no secrets, URLs without credentials). Through the API."""
    for e in _api("GET", "/v1/endpoints")["endpoints"]:
        types = ",".join(e["event_types"]) or "all"
        state = "active" if e["active"] else "disabled"
        updates = "every update" if e["every_window_update"] else "finals"
        rate = f"  rate<={e['rate_limit']}/s" if e.get("rate_limit") else ""
        why = f"  ({e['disabled_reason']})" if e.get("disabled_reason") else ""
        typer.echo(f"{e['endpoint_id']}  {state}  {e['url']}  types={types}  windows={updates}{rate}{why}")


@webhook_app.command("rotate")
def webhook_rotate(
    endpoint_id: str,
    overlap_hours: Annotated[
        float, typer.Option(help="How long the current secret stays valid (both signatures are sent).")
    ] = 24.0,
) -> None:
    """Give the endpoint a new signing secret; prints it (the only time it is shown)."""
    answer = _api("POST", f"/v1/endpoints/{endpoint_id}/rotate", {"overlap_hours": overlap_hours})
    typer.echo(f"endpoint {endpoint_id}\nsecret   {answer['secret']}")
    typer.echo(f"(the previous secret stays valid for {overlap_hours:g} h)")


@webhook_app.command("disable")
def webhook_disable(endpoint_id: str) -> None:
    """Pause deliveries to the endpoint."""
    _api("PATCH", f"/v1/endpoints/{endpoint_id}", {"active": False})
    typer.echo(f"endpoint {endpoint_id} disabled")


@webhook_app.command("enable")
def webhook_enable(endpoint_id: str) -> None:
    """Resume deliveries to the endpoint."""
    _api("PATCH", f"/v1/endpoints/{endpoint_id}", {"active": True})
    typer.echo(f"endpoint {endpoint_id} enabled")


@webhook_app.command("remove")
def webhook_remove(endpoint_id: str) -> None:
    """Delete the endpoint."""
    _api("DELETE", f"/v1/endpoints/{endpoint_id}")
    typer.echo(f"endpoint {endpoint_id} removed")


@webhook_app.command("attempts")
def webhook_attempts(
    endpoint_id: str,
    outcome: Annotated[str, typer.Option(help="all, delivered or failed")] = "all",
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
) -> None:
    """The endpoint's last delivery attempts (from ClickHouse, through the API)."""
    from datetime import UTC, datetime

    answer = _api("GET", f"/v1/endpoints/{endpoint_id}/attempts?outcome={outcome}&limit={limit}")
    for a in answer["attempts"]:
        at = datetime.fromtimestamp(a["at"] / 1000, UTC).isoformat(timespec="milliseconds")
        typer.echo(f"{at}  {a['message_id']}  #{a['attempt']}  {a['outcome']}  {a['status'] or '-'}  "
                   f"{a['error']}")  # fmt: skip


@webhook_app.command("test")
def webhook_test(endpoint_id: str) -> None:
    """Send the endpoint a test message (type WebhookTest), signed and scheduled like any other."""
    answer = _api("POST", f"/v1/endpoints/{endpoint_id}/test")
    typer.echo(f"test message {answer['message_id']} scheduled for {endpoint_id}")


@webhook_app.command("resend")
def webhook_resend(endpoint_id: str, message_id: str) -> None:
    """Send a given-up message again (a fresh schedule, the same webhook-id)."""
    _api("POST", f"/v1/endpoints/{endpoint_id}/messages/{message_id}/resend")
    typer.echo(f"message {message_id} scheduled for {endpoint_id}")


@webhook_app.command("recover")
def webhook_recover(
    endpoint_id: str,
    since: Annotated[str, typer.Option(help="ISO 8601 time with a zone, e.g. 2026-11-26T08:00:00Z.")],
) -> None:
    """Send again every message given up for the endpoint since then and not delivered since."""
    answer = _api("POST", f"/v1/endpoints/{endpoint_id}/recover", {"since": since})
    more = " (more remain: run it again once these are through)" if answer["more"] else ""
    typer.echo(f"{answer['scheduled']} message(s) scheduled for {endpoint_id}{more}")


@webhook_app.command("listen")
def webhook_listen(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8899,
    secret: Annotated[str, typer.Option(help="The endpoint's whsec_ secret, to verify signatures.")] = "",
) -> None:
    """A local receiver that verifies signatures and appends deliveries to logs/webhook-received.jsonl."""
    from aiohttp import web

    from consumers.dispatcher.endpoints import receiver_app

    s = settings()
    log_path = s.data_dir / "logs" / "webhook-received.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    web.run_app(receiver_app(secret, log_path), host="127.0.0.1", port=port, print=None)


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Fetch the Kafka jars with Maven (cached in ~/.m2) without starting anything."""
    from infra.broker import LocalKafka

    s = settings()
    classpath = LocalKafka(Path(s.data_dir) / "kafka", port=s.local_kafka_port).classpath()
    typer.echo(f"Kafka jars ready ({len(classpath.split(':'))} on the classpath)")


@broker_app.command("start")
def broker_start(
    nodes: Annotated[
        int | None,
        typer.Option(
            help="Nodes (3: replicated three times, two in sync); default ODDSTREAM_LOCAL_KAFKA_NODES."
        ),
    ] = None,
) -> None:
    """Start the local broker, or a local cluster, in the foreground (Ctrl-C stops it)."""
    import time

    from infra.broker import local_kafka

    s = settings()
    if nodes is not None:
        s = s.model_copy(update={"local_kafka_nodes": nodes})
    broker = local_kafka(s)
    broker.start()
    typer.echo(
        f"Kafka on {broker.bootstrap} ({s.local_kafka_nodes} node(s)); data and logs in {broker.data_dir}"
    )
    try:
        while broker.running:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


@registry_app.command("fetch")
def registry_fetch() -> None:
    """Fetch Apicurio Registry with Maven (cached in ~/.m2) and unpack it, without starting it."""
    from infra.registry import LocalRegistry

    s = settings()
    runner = LocalRegistry(Path(s.data_dir) / "registry", port=s.local_registry_port).runner()
    typer.echo(f"Apicurio Registry ready: {runner}")


@registry_app.command("start")
def registry_start() -> None:
    """Start the local registry in the foreground (Ctrl-C stops it). Schemas are kept in
    <data_dir>/registry/db, so ids survive a restart."""
    import time

    from infra.registry import LocalRegistry

    s = settings()
    if s.schema_registry_url:
        typer.echo(f"ODDSTREAM_SCHEMA_REGISTRY_URL names {s.schema_registry_url}; not starting one")
        return
    registry = LocalRegistry(Path(s.data_dir) / "registry", port=s.local_registry_port)
    registry.start()
    typer.echo(
        f"Schema Registry (Confluent API) on {registry.url}; logs in {registry.log_file}\n"
        f"use it with: export ODDSTREAM_SCHEMA_REGISTRY_URL={registry.url}"
    )
    try:
        while registry.running:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run an asyncio role; SIGINT or SIGTERM cancels it, so its cleanup runs in the loop."""

    async def until_stopped() -> None:
        main_task = asyncio.current_task()
        assert main_task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, main_task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await coro

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(until_stopped())


def _stop_requested(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # Explicit handlers: a process started in the background of a non-interactive shell, or
    # by some supervisors, inherits SIGINT as ignored; SIGTERM is what `up`, Docker and
    # systemd send. Both stop a role the same graceful way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_requested)
    try:
        app()
    except OddstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from exc
