#!/usr/bin/env python3
"""Prints scripts/bench's tables from the outputs of its wrk and pgbench runs.

    summarize.py RESULTS IDLE_RSS_KIB TABLE_PEAK_RSS_KIB CLOCK_TICKS "CONNECTIONS..." "OVERLOAD_CONNECTIONS..." KIND...

Exits non-zero when a run did not do the work it was meant to: a service run with answers of
another status than its kind expects, or a pgbench run that failed or aborted.
"""

import glob
import os
import re
import sys

# The status every answer of a kind has; wrk counts the others as "Non-2xx or 3xx".
REFUSED = {"order_conflict"}

WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


class Wrk:
    """A wrk run: requests a second, p50 and p99 in ms, the service's CPU a request in us."""

    def __init__(self, path, clock_ticks, refused=False):
        text = open(path).read()
        self.rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        self.total = int(re.search(r"(\d+) requests in", text).group(1))
        percentiles = {}
        for share, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
            percentiles[share] = float(value) * WRK_UNITS[unit]
        self.p50, self.p99 = percentiles.get("50"), percentiles.get("99")
        other = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        self.other = int(other.group(1)) if other else 0
        errors = re.search(r"Socket errors: (.*)", text)
        ticks = int(open(path + ".cpu").read()) if os.path.exists(path + ".cpu") else 0
        self.cpu_us = ticks / clock_ticks / self.total * 1e6 if self.total else None
        expected_other = self.total if refused else 0
        self.problem = None
        if self.other != expected_other:
            self.problem = f"{self.other} of {self.total} answers had another status than expected"
        elif errors:
            self.problem = f"socket errors: {errors.group(1)}"


class Pgbench:
    """A pgbench run: transactions a second, p50 and p99 in ms."""

    def __init__(self, path):
        text = open(path).read()
        found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
        self.problem = None
        if not found or "aborted" in text or re.search(r"number of failed transactions: [1-9]", text):
            self.problem = "pgbench failed: " + " ".join(text.strip().splitlines()[-3:])
        self.rate = float(found.group(1)) if found else 0.0
        latencies = []
        for log in glob.glob(path + "-log.*"):
            for line in open(log):
                fields = line.split()
                if len(fields) >= 3:
                    latencies.append(int(fields[2]) / 1000.0)
        latencies.sort()

        def percentile(share):
            return latencies[min(len(latencies) - 1, int(len(latencies) * share))] if latencies else None

        self.p50, self.p99 = percentile(0.5), percentile(0.99)


def ms(value):
    return "-" if value is None else f"{value:.2f}"


def us(value):
    return "-" if value is None else f"{value:.0f}"


def mib(kib):
    return f"{int(kib) / 1024:.1f} MiB"


def main():
    results, idle, table_peak = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    clock_ticks, counts = int(sys.argv[4]), sys.argv[5].split()
    overload_counts, kinds = sys.argv[6].split(), sys.argv[7:]
    problems = []

    def checked(name, run):
        if run.problem:
            problems.append(f"{name}: {run.problem}")
        return run

    print("| work | connections | service req/s | p50 ms | p99 ms | service CPU µs/req "
          "| pgbench tps (8 clients) | p50 ms | p99 ms | service ÷ pgbench |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    reads = {}
    for connections in counts:
        for kind in kinds:
            base = f"{results}/{kind}.{connections}"
            service = checked(f"{kind} at {connections} connections, service",
                              Wrk(base + ".wrk", clock_ticks, kind in REFUSED))
            database = checked(f"{kind} at {connections} connections, pgbench", Pgbench(base + ".pgbench"))
            reads[(kind, connections)] = service
            ratio = f"{service.rate / database.rate:.2f}" if database.rate else "-"
            print(f"| {kind} | {connections} | {service.rate:.0f} | {ms(service.p50)} | {ms(service.p99)} "
                  f"| {us(service.cpu_us)} | {database.rate:.0f} | {ms(database.p50)} | {ms(database.p99)} | {ratio} |")

    print()
    print("What the guarantees cost (16 connections; medians of five alternating runs):")
    print()
    print("| guarantee | without | with | cost |")
    print("|---|---|---|---|")
    def median_rate(name, runs):
        rates = sorted(checked(name, run).rate for run in runs)
        return rates[len(rates) // 2]

    rounds = sorted(glob.glob(f"{results}/costs.create.*.wrk"))
    plain = median_rate("create without a key", [Wrk(path, clock_ticks) for path in rounds])
    keyed = median_rate("create with an Idempotency-Key", [
        Wrk(path.replace("costs.create.", "costs.create_idempotent."), clock_ticks) for path in rounds])
    print(f"| Idempotency-Key on a create (service, req/s) | {plain:.0f} | {keyed:.0f} "
          f"| {1 - keyed / plain:.0%} |")
    with_event = median_rate("create with its event", [
        Pgbench(path.replace(".wrk", ".pgbench")) for path in rounds])
    keyed_sql = median_rate("create with an Idempotency-Key, pgbench", [
        Pgbench(path.replace("costs.create.", "costs.create_idempotent.").replace(".wrk", ".pgbench"))
        for path in rounds])
    print(f"| Idempotency-Key on a create (pgbench, the same SQL, tps) | {with_event:.0f} "
          f"| {keyed_sql:.0f} | {1 - keyed_sql / with_event:.0%} |")
    without_event = median_rate("create without its event", [
        Pgbench(path.replace("costs.create.", "costs.create_without_event.").replace(".wrk", ".pgbench"))
        for path in rounds])
    print(f"| the change feed's event on a create (pgbench, tps) | {without_event:.0f} "
          f"| {with_event:.0f} | {1 - with_event / without_event:.0%} |")
    key_check_us = int(open(f"{results}/costs.key_check_ns").read()) / 1000
    read = reads.get(("get_order", counts[0]))
    if read and read.cpu_us:
        print(f"| the API key check on a GET of one order (service CPU, µs) | {read.cpu_us - key_check_us:.1f} "
              f"| {read.cpu_us:.1f} | {key_check_us / read.cpu_us:.1%} |")
    else:
        print(f"| the API key check (µs) | - | {key_check_us:.2f} | - |")

    print()
    print("Overload: GET of one order by many clients at once (503 only once a request has waited")
    print("its bound, 500 ms, for a place; the p99 is of every answer):")
    print()
    print("| clients | answers/s | 200s/s | 200s/s ÷ at 16 | 503 share | p99 ms |")
    print("|---|---|---|---|---|---|")
    first_ok = None
    for connections in overload_counts:
        path = f"{results}/overload.{connections}.wrk"
        if "Requests/sec" not in open(path).read():
            print(f"| {connections} | not measured: {open(path).read().strip()} | | | | |")
            continue
        # 503s are the expected refusals here, not a failed run.
        run = Wrk(path, clock_ticks)
        ok_rate = run.rate * (1 - run.other / run.total) if run.total else 0
        first_ok = first_ok or ok_rate
        print(f"| {connections} | {run.rate:.0f} | {ok_rate:.0f} | {ok_rate / first_ok:.2f} "
              f"| {run.other / run.total:.1%} | {ms(run.p99)} |")

    print()
    print("Hostile traffic: the service's CPU for requests a caller without a route or a key can")
    print("send (each on a new connection), and authenticated reads while 16 such clients send")
    print("60 KiB bodies built to be slow to check:")
    print()
    print("| request | service CPU ms/req | answered |")
    print("|---|---|---|")
    for line in open(f"{results}/hostile.cost"):
        name, cpu_ms, statuses = line.rstrip("\n").split("\t")
        print(f"| {name} | {float(cpu_ms):.3f} | {statuses} |")
    alone = checked("reads alone", Wrk(f"{results}/hostile.alone.wrk", clock_ticks))
    flooded = checked("reads beside the hostile clients", Wrk(f"{results}/hostile.flooded.wrk", clock_ticks))
    flood = Wrk(f"{results}/hostile.flood.wrk", clock_ticks, refused=True)
    print()
    print("| authenticated GET of one order, 16 connections | req/s | p99 ms |")
    print("|---|---|---|")
    print(f"| alone | {alone.rate:.0f} | {ms(alone.p99)} |")
    print(f"| beside 16 anonymous clients sending {flood.rate:.0f} such requests/s | {flooded.rate:.0f} "
          f"| {ms(flooded.p99)} |")
    print(f"| ratio (alone ÷ beside) | {alone.rate / flooded.rate:.2f} | |")

    print()
    print("Memory (RSS of the service):")
    print()
    print(f"- idle after loading: {mib(idle)}; at its peak over the table above: {mib(table_peak)}")
    connections_run = f"{results}/memory.connections.wrk"
    if "Requests/sec" in open(connections_run).read():
        many = Wrk(connections_run, clock_ticks)
        served = 1 - many.other / many.total if many.total else 0
        print(f"- {os.environ.get('BENCH_MANY_CONNECTIONS', '2000')} connections at once (GET one order): "
              f"peak {mib(open(connections_run.replace('.wrk', '.peak')).read())}, {many.rate:.0f} answers/s, "
              f"{served:.0%} of them 200 (the rest 503 OVERLOADED, after waiting their bound for a place)")
    else:
        print(f"- many connections at once: not measured ({open(connections_run).read().strip()})")
    large = checked("the largest page", Wrk(f"{results}/memory.large_page.wrk", clock_ticks))
    size = int(open(f"{results}/memory.large_page.bytes").read())
    print(f"- the largest page ({size / 1e6:.1f} MB of JSON), 16 clients at once: peak "
          f"{mib(open(f'{results}/memory.large_page.peak').read())}, {large.rate:.1f} pages/s, "
          f"p50 {ms(large.p50)} ms, p99 {ms(large.p99)} ms")

    compared = sorted(glob.glob(f"{results}/compare.*.1.current.wrk"))
    if compared:
        revision = open(f"{results}/compare.revision").read().strip()
        print()
        print(f"Against the baseline build ({revision}), in this run: 16 connections, medians of three "
              "alternating runs of each build on the same database:")
        print()
        print("| work | baseline req/s | this build req/s | this ÷ baseline | baseline CPU µs/req "
              "| this build CPU µs/req |")
        print("|---|---|---|---|---|---|")
        for path in compared:
            kind = path.split("/compare.")[1].split(".")[0]
            runs = {build: [checked(f"{kind} against the baseline, {build}",
                                    Wrk(f"{results}/compare.{kind}.{round}.{build}.wrk", clock_ticks))
                            for round in (1, 2, 3)]
                    for build in ("baseline", "current")}
            median = lambda values: sorted(values)[len(values) // 2]
            rate = {build: median([run.rate for run in runs[build]]) for build in runs}
            cpu = {build: median([run.cpu_us or 0 for run in runs[build]]) for build in runs}
            print(f"| {kind} | {rate['baseline']:.0f} | {rate['current']:.0f} "
                  f"| {rate['current'] / rate['baseline']:.2f} | {cpu['baseline']:.0f} | {cpu['current']:.0f} |")

    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
