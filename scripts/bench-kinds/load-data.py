#!/usr/bin/env python3
"""Loads the benchmark's data set through the API, as clients would write it.

    load-data.py ORDERS SERVICES

Creates SERVICES services, then ORDERS orders booking one or two of them each, 4 hours apart
from 2031-01-01T00:00:00Z on, one after another on one keep-alive connection, so that the
order with id FIRST + i is at BASE + 4h * i (and 1 h after it is taken by the 3-hour rule).
Every write goes through the service, so the feed holds their events as in production.
Prints, as `name=value` lines for the shell: the first and last order id, the number of
orders and the id of a service.

Reads ORDERS_BASE_URL and ORDERS_API_KEY, as scripts/with-server sets them.
"""

import datetime
import sys

from service_api import connect, create

BASE_EPOCH = 1924992000  # 2031-01-01T00:00:00Z
SLOT_SECONDS = 4 * 3600


def main():
    orders, services = int(sys.argv[1]), int(sys.argv[2])
    connection = connect()
    service_ids = [create(connection, "/services", {"name": f"Bench service {n}"}) for n in range(services)]

    order_ids = []
    for index in range(orders):
        booked = [service_ids[index % services]]
        if index % 2:
            booked.append(service_ids[(index * 7 + 3) % services])
        body = {
            "datetime": _utc(BASE_EPOCH + SLOT_SECONDS * index),
            "totalfee": round(50 + (index % 100) * 1.25, 2),
            "services": [{"id": service} for service in dict.fromkeys(booked)],
        }
        order_ids.append(int(create(connection, "/orders", body)))
    if order_ids != list(range(order_ids[0], order_ids[0] + orders)):
        raise SystemExit("the orders' ids are not consecutive: another client wrote meanwhile")
    print(f"first_order_id={order_ids[0]}")
    print(f"last_order_id={order_ids[-1]}")
    print(f"orders={orders}")
    print(f"service_id={service_ids[0]}")


def _utc(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    main()
