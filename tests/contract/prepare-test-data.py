"""Writes the test data that schemathesis.toml and hooks.py read, from the live service.

    prepare-test-data.py BASE_URL REPORT_DIR

Run by tests/contract/run-against-live-server before schemathesis starts, on a fresh database:

- `order-page-tokens.dict`, `service-page-tokens.dict`: a `next_page_token` of each list, as this
  server issues it (page tokens are opaque, so none can be generated; see schemathesis.toml).
- `service-ids.txt`: the ids of services that exist, one a line: the sample services and
  FIXTURE_SERVICES more created here. An order books 1 to 50 distinct existing services, and the
  spec cannot say which ids exist, so hooks.py puts these ids into generated orders; with fewer
  than 50 of them, a generated order of 50 services could never be accepted.

Only the standard library: it runs in the contract tests' virtualenv before anything else.
"""

import json
import sys
import urllib.request
from pathlib import Path

# With the sample services, 60: the 50 an order may book, and some to spare for the services
# that the tests themselves delete.
FIXTURE_SERVICES = 57


def call(method: str, url: str, body: object = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    # urlopen raises on any status >= 400, which ends the run before the tests start.
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def main() -> None:
    base_url, report_dir = sys.argv[1].rstrip("/"), Path(sys.argv[2])

    # Tokens of the lists as the database holds only the sample data: their first page of one.
    for resource in ("order", "service"):
        token = call("GET", f"{base_url}/{resource}s?page_size=1")["next_page_token"]
        # A libFuzzer dictionary entry: one quoted string per line.
        (report_dir / f"{resource}-page-tokens.dict").write_text(json.dumps(token) + "\n")

    ids = []
    page = call("GET", f"{base_url}/services?page_size=1000")
    ids += [service["id"] for service in page["services"]]
    for number in range(1, FIXTURE_SERVICES + 1):
        ids.append(call("POST", f"{base_url}/services", {"name": f"Contract fixture {number:02}"})["id"])
    (report_dir / "service-ids.txt").write_text("".join(f"{id}\n" for id in ids))


if __name__ == "__main__":
    main()
