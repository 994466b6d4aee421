"""What the loaders share: a connection to the service that scripts/with-server started, and its
requests with the key it made.

Reads ORDERS_BASE_URL and ORDERS_API_KEY.
"""

import http.client
import json
import os
import urllib.parse


def connect():
    """A keep-alive connection to the service."""
    url = urllib.parse.urlsplit(os.environ["ORDERS_BASE_URL"])
    return http.client.HTTPConnection(url.hostname, url.port)


def headers():
    return {
        "Authorization": f"Bearer {os.environ['ORDERS_API_KEY']}",
        "Content-Type": "application/json",
    }


def create(connection, path, body):
    """POSTs `body` to `path` and returns the created record's id; stops the load otherwise."""
    connection.request("POST", path, json.dumps(body), headers())
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 201:
        raise SystemExit(f"POST {path} {body}: {response.status} {answer}")
    return answer["id"]
