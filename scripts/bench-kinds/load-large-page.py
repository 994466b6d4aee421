#!/usr/bin/env python3
"""Loads the largest page there can be, for scripts/bench's memory measurement.

    load-large-page.py

Creates BENCH_LARGE_SERVICES services (default 50, the most an order may book) and
BENCH_LARGE_ORDERS orders (default 1000, the largest page) booking all of them, 4 hours apart
from 4500-01-01T00:00:00Z on, through the API. Prints, as `name=value` lines for the shell,
where the page starts and ends (`large_page_from`, `large_page_to`) and how many bytes its
answer has.

Reads ORDERS_BASE_URL and ORDERS_API_KEY, as scripts/with-server sets them.
"""

import datetime
import json
import os

from service_api import connect, create, headers

# After what the creates of the table and of the costs take (2100 to about 4200), before
# what pgbench's creates take (from the year 5000 on).
START = datetime.datetime(4500, 1, 1, tzinfo=datetime.timezone.utc)


def main():
    services = int(os.environ.get("BENCH_LARGE_SERVICES", "50"))
    orders = int(os.environ.get("BENCH_LARGE_ORDERS", "1000"))
    connection = connect()
    service_ids = [
        create(connection, "/services", {"name": f"Large page service {n}"}) for n in range(services)
    ]
    booked = [{"id": service} for service in service_ids]
    for index in range(orders):
        at = START + datetime.timedelta(hours=4 * index)
        create(connection, "/orders", {"datetime": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "totalfee": 123.45, "services": booked})

    start = START.strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (START + datetime.timedelta(hours=4 * orders)).strftime("%Y-%m-%dT%H:%M:%SZ")
    connection.request("GET", f"/orders?page_size=1000&from={start}&to={end}", headers=headers())
    response = connection.getresponse()
    body = response.read()
    page = json.loads(body)
    if response.status != 200 or len(page["orders"]) != orders:
        raise SystemExit(f"the large page: {response.status}, {len(page.get('orders', []))} orders")
    print(f"large_page_from={start}")
    print(f"large_page_to={end}")
    print(f"large_page_bytes={len(body)}")


if __name__ == "__main__":
    main()
