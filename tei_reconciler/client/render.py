"""How the client commands show API bodies to a person: kubectl-like tables and `describe`.

Only presentation lives here, so the commands stay a list of requests and `--output json`
bypasses this module entirely (scripts read the API's own JSON, unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tei_reconciler.client.http import ServerError

INSTANCE_COLUMNS = ("NAME", "PHASE", "READY", "TRAFFIC", "MODEL", "PORT", "GPU", "RESTARTS", "AGE")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, like `kubectl get`."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (header, *rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def duration(secs: float | None) -> str:
    """`kubectl`'s compact ages: 45s, 3m12s, 5h4m, 2d3h; "-" when unknown."""
    if secs is None:
        return "-"
    s = int(max(secs, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def gpu_text(gpu: object) -> str:
    if isinstance(gpu, list):
        return ",".join(str(g) for g in gpu)
    return "-" if gpu is None else str(gpu)


def _show(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def instance_row(item: Mapping[str, Any]) -> list[str]:
    spec = item.get("spec") or {}
    return [
        str(item["name"]),
        str(item["phase"]),
        "1/1" if item.get("ready") else "0/1",
        _show(item.get("routed_by")),  # the data plane sending it calls now (envoy, grpcio)
        str(item["model_id"]),
        _show(item.get("port")),
        gpu_text(spec.get("gpu")),
        str(item.get("restarts", 0)),
        duration(item.get("uptime_secs")),
    ]


def instances_table(items: Sequence[Mapping[str, Any]]) -> str:
    if not items:
        return "No instances.\n"
    return table(INSTANCE_COLUMNS, [instance_row(i) for i in items])


def age_since(stamp: str | None, now: datetime | None = None) -> str:
    """How long ago an RFC 3339 time was, as `duration` shows it."""
    if not stamp:
        return "-"
    then = datetime.fromisoformat(stamp)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return duration(((now or datetime.now(UTC)) - then).total_seconds())


def describe(item: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> str:
    """The `describe` page: status first, then conditions, the desired spec and events."""
    reason = item.get("reason") or ""
    message = item.get("message") or ""
    phase = str(item["phase"])
    if reason or message:
        phase += f" ({': '.join(p for p in (reason, message) if p)})"
    fields = [
        ("Name", item["name"]),
        ("Model", item["model_id"]),
        ("Desired state", item.get("desired_state")),
        ("Phase", phase),
        ("Ready", "True" if item.get("ready") else "False"),
        ("Traffic", f"routed by {item['routed_by']}" if item.get("routed_by") else "none"),
        ("Port", item.get("port")),
        ("Prometheus port", item.get("prometheus_port")),
        ("GPU", gpu_text((item.get("spec") or {}).get("gpu"))),
        ("PID", item.get("pid")),
        ("Started", item.get("created_at")),
        ("Uptime", duration(item.get("uptime_secs"))),
        ("Restarts", item.get("restarts", 0)),
        ("Health failures", item.get("health_check_failures", 0)),
        ("Last health check", item.get("last_health_check")),
    ]
    if item.get("backoff_until"):
        fields.append(("Back-off until", item["backoff_until"]))
    width = max(len(k) for k, _ in fields) + 2
    out = [f"{(k + ':').ljust(width)}{_show(v)}" for k, v in fields]
    out.extend(last_state(item.get("last_exit"), width))

    conditions = item.get("conditions") or []
    rows = [
        [
            str(c["type"]),
            str(c["status"]),
            str(c.get("reason", "")),
            age_since(c.get("last_transition_time")),
            str(c.get("message", "")),
        ]
        for c in conditions
    ]
    out += _section("Conditions", ("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows)

    spec = {
        k: v for k, v in (item.get("spec") or {}).items() if k != "name" and v not in (None, [], {})
    }
    out.append("Spec:")
    out.extend(f"  {k} = {_spec_value(v)}" for k, v in sorted(spec.items()))

    rows = [
        [
            str(e["type"]),
            str(e["reason"]),
            str(e.get("count", 1)),
            age_since(e.get("last_time")),
            str(e.get("message", "")),
        ]
        for e in events
    ]
    out += _section("Events", ("TYPE", "REASON", "COUNT", "LAST SEEN", "MESSAGE"), rows)
    return "\n".join(line.rstrip("\n") for line in out) + "\n"


def last_state(last_exit: Mapping[str, Any] | None, width: int) -> list[str]:
    """kubectl's Last State: how the last process ended and the last lines it wrote."""
    if not last_exit:
        return []
    rows: list[tuple[str, object]] = [("Reason", last_exit.get("reason"))]
    if last_exit.get("signal") is not None:
        name = last_exit.get("signal_name") or "signal"
        rows.append(("Signal", f"{name} ({last_exit['signal']})"))
    else:
        rows.append(("Exit code", last_exit.get("code")))
    rows.append(("Finished", f"{last_exit.get('at')} ({age_since(last_exit.get('at'))} ago)"))
    if last_exit.get("message"):
        rows.append(("Message", last_exit["message"]))
    inner = max(width - 2, max(len(k) for k, _ in rows) + 2)
    out = [f"{'Last State:'.ljust(width)}Terminated"]
    out.extend(f"  {(k + ':').ljust(inner)}{_show(v)}" for k, v in rows)
    lines = last_exit.get("last_lines") or []
    if lines:
        out.append("  Last lines:")
        out.extend(f"    {line}" for line in lines)
    return out


def _spec_value(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_spec_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_spec_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def _section(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A titled table of `describe`, or `<none>` under its title."""
    return [f"{title}:", _indent(table(header, rows)) if rows else "  <none>"]


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def server_error(exc: ServerError) -> str:
    """`error: CODE: message`, then one line per detail (field, position, message)."""
    lines = [f"error: {exc.code}: {exc.message}"]
    for d in exc.details:
        where = f"{d.line}:{d.column}: " if d.line else ""
        name = f"{d.field}: " if d.field else ""
        lines.append(f"  {where}{name}{d.message}")
    return "\n".join(lines) + "\n"


def plan_lines(actions: Sequence[Mapping[str, Any]]) -> str:
    if not actions:
        return "plan: nothing to do\n"
    rows = [
        f"  {a.get('action', '')} {a.get('instance', '')}"
        + (f": {a['reason']}" if a.get("reason") else "")
        for a in actions
    ]
    return "plan:\n" + "\n".join(rows) + "\n"


MODEL_COLUMNS = ("MODEL", "STATUS", "REVISION", "SIZE", "USED BY", "MESSAGE")


def size(count: int | None) -> str:
    """Bytes as a person reads them: 512 B, 86.7 MiB, 1.3 GiB."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop always returns


def model_row(item: Mapping[str, Any]) -> list[str]:
    status = str(item["status"])
    if item.get("declared"):
        status += " (kept)" if item.get("keep") else " (declared)"
    revision = item.get("commit") or item.get("revision")
    message = ": ".join(p for p in (item.get("reason"), item.get("message")) if p)
    return [
        str(item["model_id"]),
        status,
        str(revision)[:12] if revision else "-",
        size(item.get("cache_size_bytes")),
        ",".join(item.get("used_by") or []) or "-",
        message or "-",
    ]


def models_table(items: Sequence[Mapping[str, Any]]) -> str:
    if not items:
        return "No models.\n"
    return table(MODEL_COLUMNS, [model_row(i) for i in items])


def progress_bar(progress: Mapping[str, Any], width: int) -> str:
    """`[##########          ]  50%  45.0 MiB of 90.1 MiB  3/7 files`."""
    percent = float(progress.get("percent", 0.0))
    filled = int(width * min(max(percent, 0.0), 100.0) / 100)
    return (
        f"[{'#' * filled}{' ' * (width - filled)}] {percent:3.0f}%  "
        f"{size(progress.get('done_bytes'))} of {size(progress.get('total_bytes'))}  "
        f"{progress.get('files_done', 0)}/{progress.get('files_total', 0)} files"
    )
