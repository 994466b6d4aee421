// Creates an order through the orders service and handles the one conflict a caller should
// expect: another order less than 3 hours away (409, problem code ORDER_TIME_CONFLICT).
//
//   node dist/create-order.js [DATETIME [SERVICE_ID...]]
//
// ORDERS_BASE_URL names the service (default http://127.0.0.1:8080). ORDERS_API_KEY is the
// secret of an API key with the scopes `orders:write` (for the create) and `orders:read` (to
// look up a conflicting order); it is sent as `Authorization: Bearer <secret>`. Exit status: 0
// when the order was created, 3 when its time conflicts with another order, 1 on any other
// failure (a missing, invalid or revoked key among them: 401 UNAUTHENTICATED, or 403 FORBIDDEN
// for a key without the scope).

import { pathToFileURL } from "node:url";

import createClient from "openapi-fetch";

import type { components, paths } from "./generated/orders-api.js";

export type Order = components["schemas"]["Order"];
export type OrderInput = components["schemas"]["OrderInput"];
export type Problem = components["schemas"]["Problem"];

export type OrdersClient = ReturnType<typeof createOrdersClient>;

/**
 * A client for the service at `baseUrl` that authenticates every request with the API key
 * whose secret is `apiKey` (the spec's `ApiKey` scheme: HTTP bearer). The key's scopes decide
 * what it may do: `orders:read` for every GET, `orders:write` to create, replace or delete
 * orders, `services:write` for the same on services.
 */
export function createOrdersClient(baseUrl: string, apiKey: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${apiKey}` } });
}

export type CreateOrderResult =
  | { outcome: "created"; order: Order; location: string | null; etag: string | null }
  | { outcome: "time-conflict"; conflictingOrderId: string; problem: Problem };

/** A response the caller has no specific handling for, with the service's problem if any. */
export class OrdersApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem | undefined,
  ) {
    super(
      problem === undefined
        ? `orders service answered HTTP ${status}`
        : `orders service answered ${status} ${problem.code}: ${problem.detail} (request ${problem.request_id})`,
    );
    this.name = "OrdersApiError";
  }
}

export async function createOrder(client: OrdersClient, input: OrderInput): Promise<CreateOrderResult> {
  const { data, error, response } = await client.POST("/orders", { body: input });
  if (data !== undefined) {
    return {
      outcome: "created",
      order: data,
      location: response.headers.get("location"),
      etag: response.headers.get("etag"),
    };
  }
  // Branch on the problem's code, not on its text: the code is the stable part.
  const problem = isProblem(error) ? error : undefined;
  if (response.status === 409 && problem?.code === "ORDER_TIME_CONFLICT" && problem.conflicting_order_id !== undefined) {
    return { outcome: "time-conflict", conflictingOrderId: problem.conflicting_order_id, problem };
  }
  throw new OrdersApiError(response.status, problem);
}

export async function viewOrder(client: OrdersClient, id: string): Promise<Order> {
  const { data, error, response } = await client.GET("/orders/{id}", { params: { path: { id } } });
  if (data === undefined) {
    throw new OrdersApiError(response.status, isProblem(error) ? error : undefined);
  }
  return data;
}

// A body that is not the service's problem+json (a proxy's HTML page, say) is not a Problem,
// whatever the spec promises.
function isProblem(value: unknown): value is Problem {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { code?: unknown }).code === "string" &&
    typeof (value as { status?: unknown }).status === "number"
  );
}

async function main(args: string[]): Promise<number> {
  const baseUrl = process.env["ORDERS_BASE_URL"] ?? "http://127.0.0.1:8080";
  const apiKey = process.env["ORDERS_API_KEY"];
  if (apiKey === undefined || apiKey === "") {
    console.error("ORDERS_API_KEY is not set: give it the secret of an API key with orders:read and orders:write");
    return 1;
  }
  const [datetime = "2022-11-02T09:30:00+01:00", ...serviceIds] = args;
  const input: OrderInput = {
    datetime,
    totalfee: 149.99,
    services: (serviceIds.length > 0 ? serviceIds : ["123", "456"]).map((id) => ({ id })),
  };

  const client = createOrdersClient(baseUrl, apiKey);
  const result = await createOrder(client, input);
  switch (result.outcome) {
    case "created": {
      const { order } = result;
      const services = order.services.map((service) => service.name).join(", ");
      console.log(`created order ${order.id} at ${order.datetime} for ${order.totalfee}: ${services}`);
      // Who made the change is the server's to say: the name of the key the request came with.
      console.log(`  created by ${order.created_by}, last updated by ${order.updated_by}`);
      console.log(`  location ${result.location ?? "-"}, etag ${result.etag ?? "-"}`);
      return 0;
    }
    case "time-conflict": {
      // Show the caller what is in the way, so they can pick another time.
      const other = await viewOrder(client, result.conflictingOrderId);
      console.error(`not created: ${datetime} is less than 3 hours from order ${other.id} at ${other.datetime}`);
      console.error(`  ${result.problem.detail} (request ${result.problem.request_id})`);
      return 3;
    }
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (status) => {
      process.exitCode = status;
    },
    (error: unknown) => {
      console.error(error instanceof Error ? error.message : error);
      process.exitCode = 1;
    },
  );
}
