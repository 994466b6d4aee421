"""Writes the test data that schemathesis.toml and hooks.py read, from the live service.

    prepare-test-data.py BASE_URL REPORT_DIR

Run by tests/contract/run-against-live-server before schemathesis starts, on a fresh database.
Every call is authenticated with the API key in ORDERS_API_KEY (scripts/with-server sets it to
the key `local`, which has every scope), as `Authorization: Bearer <secret>`.

- `order-page-tokens.dict`, `service-page-tokens.dict`: a `next_page_token` of each list, as this
  server issues it (page tokens are opaque, so none can be generated; see schemathesis.toml).
- `event-cursors.dict`: a `next_cursor` of the change feed, and `now`, likewise.
- `service-ids.txt`: the ids of services that exist, one a line: the sample services and
  FIXTURE_SERVICES more created here. An order books 1 to 50 distinct existing services, and the
  spec cannot say which ids exist, so hooks.py puts these ids into generated orders; with fewer
  than 50 of them, a generated order of 50 services could never be accepted.

Only the standard library: it runs in the contract tests' virtualenv before anything else.
"""

import json
import os
import sys
import urllib.request
from pathlib import Path

# With the sample services, 60: the 50 an order may book, and some to spare for the services
# that the tests themselves delete.
FIXTURE_SERVICES = 57


def call(method: str, url: str, body: object = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {API_KEY}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    # urlopen raises on any status >= 400, which ends the run before the tests start.
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


API_KEY = os.environ.get("ORDERS_API_KEY", "")


def main() -> None:
    if not API_KEY:
        sys.exit("prepare-test-data.py: ORDERS_API_KEY is not set; run the contract tests with scripts/contract-test")
    base_url, report_dir = sys.argv[1].rstrip("/"), Path(sys.argv[2])

    # Tokens of the lists as the database holds only the sample data: their first page of one.
    for resource in ("order", "service"):
        token = call("GET", f"{base_url}/{resource}s?page_size=1")["next_page_token"]
        # A libFuzzer dictionary entry: one quoted string per line.
        (report_dir / f"{resource}-page-tokens.dict").write_text(json.dumps(token) + "\n")

    # Cursors of the change feed as this server issues them, and `now`.
    cursor = call("GET", f"{base_url}/events?limit=1")["next_cursor"]
    (report_dir / "event-cursors.dict").write_text(json.dumps(cursor) + "\n" + json.dumps("now") + "\n")

    ids = []
    page = call("GET", f"{base_url}/services?page_size=1000")
    ids += [service["id"] for service in page["services"]]
    for number in range(1, FIXTURE_SERVICES + 1):
        ids.append(call("POST", f"{base_url}/services", {"name": f"Contract fixture {number:02}"})["id"])
    (report_dir / "service-ids.txt").write_text("".join(f"{id}\n" for id in ids))


if __name__ == "__main__":
    main()
