#!/usr/bin/env python3
"""Prints scripts/bench's table from the outputs of its wrk and pgbench runs.

    summarize.py RESULTS IDLE_RSS_KIB PEAK_RSS_KIB "CONNECTIONS..." KIND...

Exits non-zero when a run did not do the work it was meant to: a service run with answers of
another status than its kind expects, or a pgbench run that failed or aborted.
"""

import glob
import re
import sys

# The status every answer of a kind has; wrk counts the others as "Non-2xx or 3xx".
REFUSED = {"order_conflict"}

WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_result(path, kind):
    text = open(path).read()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    percentiles = {}
    for share, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        percentiles[share] = float(value) * WRK_UNITS[unit]
    other = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    other = int(other.group(1)) if other else 0
    errors = re.search(r"Socket errors: (.*)", text)
    expected_other = total if kind in REFUSED else 0
    problem = None
    if other != expected_other:
        problem = f"{other} of {total} answers had another status than expected"
    elif errors:
        problem = f"socket errors: {errors.group(1)}"
    return rate, percentiles.get("50"), percentiles.get("99"), problem


def pgbench_result(path, log_prefix):
    text = open(path).read()
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    problem = None
    if not found or "aborted" in text or re.search(r"number of failed transactions: [1-9]", text):
        problem = "pgbench failed: " + " ".join(text.strip().splitlines()[-3:])
    latencies = []
    for log in glob.glob(log_prefix + ".*"):
        for line in open(log):
            fields = line.split()
            if len(fields) >= 3:
                latencies.append(int(fields[2]) / 1000.0)
    latencies.sort()

    def percentile(share):
        return latencies[min(len(latencies) - 1, int(len(latencies) * share))] if latencies else None

    return (float(found.group(1)) if found else 0.0), percentile(0.5), percentile(0.99), problem


def ms(value):
    return "-" if value is None else f"{value:.2f}"


def main():
    results, idle, peak, counts, kinds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5:]
    rows, problems = [], []
    for connections in counts:
        for kind in kinds:
            base = f"{results}/{kind}.{connections}"
            service = wrk_result(base + ".wrk", kind)
            database = pgbench_result(base + ".pgbench", base + ".pgbench-log")
            for name, result in (("service", service), ("pgbench", database)):
                if result[3]:
                    problems.append(f"{kind} at {connections} connections, {name}: {result[3]}")
            ratio = service[0] / database[0] if database[0] else None
            rows.append((kind, connections, service, database, ratio))
    print("| work | connections | service req/s | p50 ms | p99 ms | pgbench tps (8 clients) | p50 ms | p99 ms | service ÷ pgbench |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, connections, service, database, ratio in rows:
        print(
            f"| {kind} | {connections} | {service[0]:.0f} | {ms(service[1])} | {ms(service[2])} "
            f"| {database[0]:.0f} | {ms(database[1])} | {ms(database[2])} | {'-' if ratio is None else f'{ratio:.2f}'} |"
        )
    print()
    print(f"Service RSS: {idle / 1024:.1f} MiB idle after loading, {peak / 1024:.1f} MiB at its peak.")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
