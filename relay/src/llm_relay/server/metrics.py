"""Prometheus metrics, rendered as text exposition format 0.0.4 (no client library needed)."""

from __future__ import annotations

import bisect
import re
from collections import Counter

from .usage import UsageLedger

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        # (token name, provider, status, method): in envelope mode the inner request's (inner.py)
        self.requests: Counter[tuple[str, str, int, str]] = Counter()
        self.upstream_errors: Counter[tuple[str, str]] = Counter()  # (provider, kind)
        self.bucket_counts = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.duration_count = 0
        self.in_flight = 0
        self.streams = 0
        self.reloads: Counter[str] = Counter()  # result: ok / failed
        self.fallbacks: Counter[tuple[str, str]] = Counter()  # (provider given up, reason)
        self.usage = UsageLedger()
        # Requests refused by the Cloudflare Access check (access_jwt.py), by reason (the error code).
        self.access_refusals: Counter[str] = Counter()

    def observe(self, token: str, provider: str, status: int, seconds: float, method: str = "-") -> None:
        self.requests[(token, provider, status, method[:16])] += 1
        self.bucket_counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        self.duration_count += 1

    def render(
        self, extra_gauges: dict[str, float] | None = None, access_fetches: Counter[str] | None = None
    ) -> str:
        lines = [
            "# HELP llm_relay_requests_total Requests answered, by client token name, provider, status and "
            "method (an envelope's: the inner request's method and the status inside the sealed answer).",
            "# TYPE llm_relay_requests_total counter",
        ]
        for (token, provider, status, method), n in sorted(self.requests.items()):
            labels = _labels(token=token, provider=provider, status=str(status), method=method)
            lines.append(f"llm_relay_requests_total{labels} {n}")
        lines += [
            "# HELP llm_relay_request_duration_seconds Time from request to the end of the answer.",
            "# TYPE llm_relay_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip((*BUCKETS, "+Inf"), self.bucket_counts, strict=True):
            cumulative += n
            lines.append(f'llm_relay_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f"llm_relay_request_duration_seconds_sum {self.duration_sum:.6f}")
        lines.append(f"llm_relay_request_duration_seconds_count {self.duration_count}")
        lines += [
            "# HELP llm_relay_in_flight_requests Requests (and streams) being served now.",
            "# TYPE llm_relay_in_flight_requests gauge",
            f"llm_relay_in_flight_requests {self.in_flight}",
            "# HELP llm_relay_streams_in_flight SSE streams being relayed now.",
            "# TYPE llm_relay_streams_in_flight gauge",
            f"llm_relay_streams_in_flight {self.streams}",
            "# HELP llm_relay_upstream_errors_total Provider connection failures, timeouts and resets.",
            "# TYPE llm_relay_upstream_errors_total counter",
        ]
        for (provider, kind), n in sorted(self.upstream_errors.items()):
            lines.append(f"llm_relay_upstream_errors_total{_labels(provider=provider, kind=kind)} {n}")
        lines += [
            "# HELP llm_relay_reloads_total SIGHUP reloads by result.",
            "# TYPE llm_relay_reloads_total counter",
        ]
        for result, n in sorted(self.reloads.items()):
            lines.append(f"llm_relay_reloads_total{_labels(result=result)} {n}")
        lines += [
            "# HELP llm_relay_fallbacks_total Attempts given up for the next provider of a route, by reason.",
            "# TYPE llm_relay_fallbacks_total counter",
        ]
        for (provider, reason), n in sorted(self.fallbacks.items()):
            lines.append(f"llm_relay_fallbacks_total{_labels(provider=provider, reason=reason)} {n}")
        lines += [
            "# HELP llm_relay_tokens_total Tokens the providers reported, by client, provider, model, kind.",
            "# TYPE llm_relay_tokens_total counter",
        ]
        for (client, provider, model, kind), n in sorted(self.usage.tokens.items()):
            labels = _labels(client=client, provider=provider, model=model, kind=kind)
            lines.append(f"llm_relay_tokens_total{labels} {n}")
        lines += [
            "# HELP llm_relay_access_refusals_total Requests refused by the Access check, by reason.",
            "# TYPE llm_relay_access_refusals_total counter",
        ]
        for reason, n in sorted(self.access_refusals.items()):
            lines.append(f"llm_relay_access_refusals_total{_labels(reason=reason)} {n}")
        if access_fetches is not None:
            lines += [
                "# HELP llm_relay_access_cert_fetches_total Fetches of the Access team's certs, by result.",
                "# TYPE llm_relay_access_cert_fetches_total counter",
            ]
            for result, n in sorted(access_fetches.items()):
                lines.append(f"llm_relay_access_cert_fetches_total{_labels(result=result)} {n}")
        for name, value in (extra_gauges or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


_CLIENT_LABEL = re.compile(r'[{,](?:token|client)="([^"]*)"')


def own_lines(text: str, client: str) -> str:
    """The exposition a client gets on the main listener: every line that names a client (label `token`
    or `client`) dropped unless it names this one. Other clients' names, request counts and tokens are
    theirs; the metrics listener (localhost only, for Prometheus) still shows everything."""
    kept = []
    for line in text.splitlines(keepends=True):
        match = _CLIENT_LABEL.search(line)
        if match is None or match.group(1) == client:
            kept.append(line)
    return "".join(kept)
