"""Schemathesis hooks for the contract tests, loaded through `hooks` in schemathesis.toml.

Why: an order books 1 to 50 distinct *existing* services, and no schema can say which ids
exist. Generated ids almost never do, so nearly every generated order was refused with 422
UNKNOWN_SERVICE, and the few that named real services mostly fell within 3 hours of another
order (409): POST /orders answered 201 a handful of times in a whole run, so the response
checks saw almost no created or replaced order, and the stateful phase almost never got to
view, replace or delete one.

What: just before a positive create or replace of an order is sent, each of its service ids
that names no existing service becomes the id of one that prepare-test-data.py listed or
created before the run, distinct from the others, and its date becomes one that no other
rewritten order is near. All else stays as generated: the ids that already name an existing
service (the tool copies some from responses), the fee, how many services, the time of day and
the UTC offset. Services the run creates are never added to orders here, so that the tests can
still delete them (a booked service cannot be deleted: 409 SERVICE_IN_USE). The body still
matches the schema, so the case is still positive and every check treats it as before
(schemathesis revalidates a case that a hook changed and would relabel it if it no longer
matched).

A positive list of orders whose `from` is later than its `to` gets the two swapped: the
service refuses a reversed range with 400, which no schema can express. A positive request for
free slots gets the same, and its `to` brought to at most 31 days after `from`, the longest
window the service answers for.

Left as generated:
- negative cases: what they test is the invalid input, and a rewrite could make it valid;
- the examples phase: it sends the spec's own examples, exactly as written;
- in the fuzzing phase, one positive case in four, so that arbitrary ids still reach the
  server (422), and the date of another one in four, so that orders still meet the dates of
  other orders, which the tool copies from responses: 409 ORDER_TIME_CONFLICT, the rule the
  service exists for, which an order naming ids the server never issued does not reach (it
  gets 422 first).
"""

import datetime
import functools
import itertools
import json
import random
import re
from pathlib import Path

import schemathesis

ORDER_WRITES = frozenset({"POST /orders", "PUT /orders/{id}"})

# Written by prepare-test-data.py before the run; the path matches the dictionaries' in
# schemathesis.toml.
SERVICE_IDS_FILE = Path(__file__).resolve().parents[2] / "target" / "contract-report" / "service-ids.txt"

# Rewritten dates: from here on, this many days apart, each used once. Whatever its time of day
# and offset (under 24 hours either way), a date-time's instant lies between a day before its
# date's midnight and two days after, so with 4 days between dates no two rewritten orders are
# even a day apart, let alone the 3 hours that would get a 409. Far from the sample orders
# (2022) and from "now", which the tool copies from responses (`created_at`) into dates.
FIRST_DATE = datetime.date(2100, 1, 1)
DAYS_APART = 4
FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# What the fuzzing phase's positive orders get, in turn (see above).
AS_GENERATED, SERVICES, SERVICES_AND_DATE = "as generated", "services", "services and date"
FUZZING_TURNS = (AS_GENERATED, SERVICES, SERVICES_AND_DATE, SERVICES_AND_DATE)


def _read_service_ids() -> list[str]:
    try:
        text = SERVICE_IDS_FILE.read_text()
    except FileNotFoundError:
        raise RuntimeError(
            f"{SERVICE_IDS_FILE} is missing; run the contract tests with scripts/contract-test, which writes it"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


# The services written down before the run, that orders are given, in a stable order so that
# the same seed picks the same ones; less those the run deletes.
prepared_services = _read_service_ids()
# Services the run created and has not deleted: kept where the tool put them, never added.
created_services = set()
# A fixed seed: the same calls, in the same order, get the same services.
choose = random.Random(20221101)
next_date = (FIRST_DATE + datetime.timedelta(days=DAYS_APART * n) for n in itertools.count())
fuzzing_turns = itertools.cycle(FUZZING_TURNS)


def _component_modes(case) -> dict[str, str]:
    return {location.value: info.mode.value for location, info in case.meta.components.items()}


def _is_order_body(body) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("datetime"), str)
        and FULL_DATE.match(body["datetime"]) is not None
        and isinstance(body.get("services"), list)
        and all(isinstance(item, dict) and isinstance(item.get("id"), str) for item in body["services"])
    )


@schemathesis.hook
def after_load_schema(context, schema):
    """Stop the run if the spec's orders no longer have the shape assumed here.

    Otherwise the hooks below would quietly stop matching, and the run would pass while
    creating almost no orders again.
    """
    raw = schema.raw_schema

    def resolve(node):
        while "$ref" in node:
            node = functools.reduce(lambda parent, key: parent[key], node["$ref"][2:].split("/"), raw)
        return node

    for path, method in (("/orders", "post"), ("/orders/{id}", "put")):
        try:
            body = resolve(resolve(raw["paths"][path][method]["requestBody"])["content"]["application/json"]["schema"])
            item = resolve(resolve(body["properties"]["services"])["items"])
            shaped = "datetime" in body["properties"] and set(item["properties"]) == {"id"}
        except (KeyError, TypeError):
            shaped = False
        if not shaped:
            raise RuntimeError(
                f"tests/contract/hooks.py: {method.upper()} {path} no longer takes a JSON body with `datetime` "
                "and `services: [{id}]`; update the hooks to the spec"
            )


def _instant(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _order_range_in_order(case):
    """A positive `GET /orders` whose `from` is later than its `to` gets them swapped.

    The service refuses a reversed range (400), which no schema can express; a valid range
    keeps the case positive, and the check that valid requests are accepted meaningful. A pair
    this parser cannot compare loses its `to` (it is optional), so no reversed pair slips by.
    """
    query = case.query
    if not isinstance(query, dict) or "from" not in query or "to" not in query:
        return
    start, end = _instant(query["from"]), _instant(query["to"])
    if start is None or end is None or start.tzinfo is None or end.tzinfo is None:
        case.query = {name: value for name, value in query.items() if name != "to"}
    elif start > end:
        case.query = {**query, "from": query["to"], "to": query["from"]}


# The longest window GET /free-slots answers for.
MAX_FREE_SLOTS_WINDOW = datetime.timedelta(days=31)


def _free_slots_window_in_bounds(case):
    """A positive `GET /free-slots` gets a window the service answers for: `from` not later
    than `to`, and at most 31 days between them.

    Both are required, so neither can be dropped: a pair this parser cannot compare gets
    `to` equal to `from`, a window of one instant.
    """
    query = case.query
    if not isinstance(query, dict) or "from" not in query or "to" not in query:
        return
    start, end = _instant(query["from"]), _instant(query["to"])
    if start is None or end is None or start.tzinfo is None or end.tzinfo is None:
        case.query = {**query, "to": query["from"]}
        return
    if start > end:
        query = {**query, "from": query["to"], "to": query["from"]}
        start, end = end, start
    if end - start > MAX_FREE_SLOTS_WINDOW:
        # Earlier than `end`, so within the years both the parser and the service take.
        query = {**query, "to": (start + MAX_FREE_SLOTS_WINDOW).isoformat()}
    case.query = query


# The operations whose positive queries get a range in order, and how.
RANGE_FIXES = {"GET /orders": _order_range_in_order, "GET /free-slots": _free_slots_window_in_bounds}


def _feed_reads_do_not_wait(case):
    """`GET /events` with a `wait` the service takes (1 to 30 seconds) gets `wait=0`.

    A read at the feed's head would be held until that time is up, which at hundreds of cases
    would make the run take hours and outlast the request timeout above. Waiting changes when
    the answer comes, not its form, which is what these checks compare with the spec; waits
    themselves are tested in tests/api/long_polling.rs. Values the service refuses are sent as
    generated.
    """
    query = case.query
    if not isinstance(query, dict) or "wait" not in query:
        return
    wait = str(query["wait"])
    if wait.isdigit() and 1 <= int(wait) <= 30:
        case.query = {**query, "wait": "0"}


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.label == "GET /events":
        _feed_reads_do_not_wait(case)
        return
    if case.meta is None:
        return
    fix_range = RANGE_FIXES.get(case.operation.label)
    if fix_range is not None:
        if case.meta.generation.mode.value == "positive" and _component_modes(case).get("query") == "positive":
            fix_range(case)
        return
    if case.operation.label not in ORDER_WRITES:
        return
    meta = case.meta
    if meta.generation.mode.value != "positive" or _component_modes(case).get("body") != "positive":
        return
    phase = meta.phase.name.value
    if phase == "examples":
        return
    rewrite = next(fuzzing_turns) if phase == "fuzzing" else SERVICES_AND_DATE
    if rewrite == AS_GENERATED:
        return
    body = case.body
    if not _is_order_body(body):
        return
    # Distinct, as the schema has it (`uniqueItems`, and an item is nothing but its id).
    named = [item["id"] for item in body["services"]]
    kept = {id for id in named if id in prepared_services or id in created_services}
    spare = [id for id in prepared_services if id not in kept]
    unknown = len(named) - len(kept)
    # Too many services to name distinct existing ones: sent as generated, for a 422.
    if unknown > len(spare):
        return
    fresh = iter(choose.sample(spare, unknown))
    body = {**body, "services": [{"id": id if id in kept else next(fresh)} for id in named]}
    if rewrite == SERVICES_AND_DATE:
        body["datetime"] = next(next_date).isoformat() + body["datetime"][10:]
    case.body = body


def _json(response):
    try:
        return json.loads(response.content)
    except ValueError:
        return None


@schemathesis.hook
def after_call(context, case, response):
    label, status = case.operation.label, response.status_code
    gone = []
    if label == "POST /services" and status == 201:
        created = _json(response)
        if isinstance(created, dict) and isinstance(created.get("id"), str):
            created_services.add(created["id"])
    elif label == "DELETE /services/{id}" and status == 204:
        gone = [(case.path_parameters or {}).get("id")]
    elif label in ORDER_WRITES and status == 422:
        problem = _json(response)
        gone = (problem.get("unknown_service_ids") if isinstance(problem, dict) else None) or []
    for id in gone:
        created_services.discard(id)
        if id in prepared_services:
            prepared_services.remove(id)
