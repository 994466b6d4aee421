// The service's Swagger UI, /docs, as a person uses it: in headless Chromium, every operation of
// the spec is listed, and after "Authorize" with an API key, "Try it out" → "Execute" on
// POST /orders, with the documented request example as it is, creates an order on the live
// server.
//
// Run by scripts/docs-browser-test, which starts the server (scripts/with-server) and sets
// ORDERS_BASE_URL and ORDERS_API_KEY (the secret of the key `local`, every scope). CHROMIUM_PATH overrides the browser (default /usr/bin/chromium); the
// screenshot goes to DOCS_SCREENSHOT (default target/test-artifacts/docs-try-it-out.png).

import assert from "node:assert/strict";
import { accessSync, constants } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const baseUrl = process.env.ORDERS_BASE_URL;
const apiKey = process.env.ORDERS_API_KEY;
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const screenshotPath = path.resolve(
  repo,
  process.env.DOCS_SCREENSHOT || "target/test-artifacts/docs-try-it-out.png",
);
// Exactly these: headless, usable as root, and making no connection of its own, so that the
// test passes on a machine that reaches nothing beyond loopback.
const chromiumArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
];
const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
// Swagger UI renders large specs slowly on a loaded machine.
const UI_TIMEOUT_MS = 60_000;

let userDataDir;
let context;
let page;
const offOriginRequests = [];
let screenshotTaken = false;

before(async () => {
  assert.ok(baseUrl, "ORDERS_BASE_URL is not set: run this through scripts/docs-browser-test");
  assert.ok(apiKey, "ORDERS_API_KEY is not set: run this through scripts/docs-browser-test");
  try {
    accessSync(chromiumPath, constants.X_OK);
  } catch {
    throw new Error(
      `Chromium not found at ${chromiumPath}. Install it (Debian/Ubuntu: ` +
        "`apt-get update && apt-get install -y chromium`), or set CHROMIUM_PATH to a Chromium binary.",
    );
  }
  userDataDir = await mkdtemp(path.join(tmpdir(), "orders-docs-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    args: chromiumArgs,
    headless: true,
    viewport: { width: 1280, height: 900 },
  });
  // The page must need nothing but the service itself (no CDN): anything else is refused and
  // recorded.
  const origin = new URL(baseUrl).origin;
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("data:") || url.startsWith("blob:") || new URL(url).origin === origin) {
      return route.continue();
    }
    offOriginRequests.push(url);
    return route.abort("blockedbyclient");
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  await page.goto(`${baseUrl}/docs`);
  await page.locator(".swagger-ui .opblock").first().waitFor();
});

after(async () => {
  // A test that failed before its screenshot still leaves one: the page as it was then.
  if (page && !screenshotTaken) {
    await mkdir(path.dirname(screenshotPath), { recursive: true });
    await page.screenshot({ path: screenshotPath, fullPage: true }).catch(() => {});
  }
  await context?.close();
  if (userDataDir) {
    await rm(userDataDir, { recursive: true, force: true });
  }
});

test("the docs page lists every operation of the spec", async () => {
  const response = await fetch(`${baseUrl}/openapi.json`);
  assert.equal(response.status, 200, "GET /openapi.json");
  const spec = await response.json();
  const expected = Object.entries(spec.paths).flatMap(([specPath, item]) =>
    HTTP_METHODS.filter((method) => method in item).map((method) => `${method.toUpperCase()} ${specPath}`),
  );
  assert.ok(expected.length > 0, "the spec has no operations");

  const listed = await page.locator(".swagger-ui .opblock").evaluateAll((blocks) =>
    blocks.map((block) => {
      const method = block.querySelector(".opblock-summary-method")?.textContent?.trim() ?? "";
      const listedPath = block.querySelector(".opblock-summary-path")?.getAttribute("data-path") ?? "";
      return `${method.toUpperCase()} ${listedPath}`;
    }),
  );
  const missing = expected.filter((operation) => !listed.includes(operation));
  assert.deepEqual(missing, [], `operations in the spec but not on the page; the page lists: ${listed.join(", ")}`);
  assert.equal(listed.length, expected.length, `the page lists ${listed.join(", ")}`);
  assert.deepEqual(offOriginRequests, [], "the page asked for something other than the service");
});

test("Authorize with an API key, then Try it out → Execute on POST /orders with the documented example creates an order", async () => {
  // The key goes in through the page's Authorize dialog, as a person would enter it: the
  // `ApiKey` scheme is HTTP bearer, so Swagger UI asks for the bare secret and sends it as
  // `Authorization: Bearer <secret>` on the operations that require it.
  const authorize = page.locator(".swagger-ui .auth-wrapper .btn.authorize");
  await authorize.click();
  const dialog = page.locator(".swagger-ui .dialog-ux .modal-ux");
  await dialog.waitFor();
  const scheme = dialog.locator(".auth-container").filter({ hasText: "ApiKey" });
  await scheme.getByRole("textbox").fill(apiKey);
  await scheme.getByRole("button", { name: "Apply credentials" }).click();
  // Once authorized, the dialog offers to remove the key instead, and the page's button shows
  // a closed padlock.
  await scheme.getByRole("button", { name: "Remove authorization" }).waitFor();
  await dialog.getByRole("button", { name: "Close", exact: true }).click();
  await dialog.waitFor({ state: "detached" });
  assert.match((await authorize.getAttribute("class")) ?? "", /\blocked\b/, "the Authorize button shows the key as entered");

  const operation = page.locator(".swagger-ui .opblock-post").filter({
    has: page.locator('.opblock-summary-path[data-path="/orders"]'),
  });
  await operation.locator(".opblock-summary").first().click();
  await operation.getByRole("button", { name: "Try it out" }).click();
  const body = operation.locator("textarea.body-param__text");
  await body.waitFor();
  const sent = await body.inputValue();
  await operation.getByRole("button", { name: "Execute" }).click();

  const status = operation.locator(".live-responses-table .response .response-col_status");
  await status.first().waitFor();
  const code = (await status.first().textContent())?.trim();
  const shown = (await operation.locator(".live-responses-table .response .response-col_description").first().textContent())?.trim();
  const curl = (await operation.locator(".curl-command .curl, .curl-command").first().textContent())?.trim();

  await mkdir(path.dirname(screenshotPath), { recursive: true });
  await operation.locator(".responses-wrapper").scrollIntoViewIfNeeded();
  await page.screenshot({ path: screenshotPath });
  screenshotTaken = true;
  console.log(`screenshot: ${path.relative(repo, screenshotPath)}`);

  assert.equal(
    code,
    "201",
    `POST /orders with the documented example (the body Swagger UI filled in) answered ${code}, not 201.\n` +
      `Sent: ${sent}\nShown: ${shown}\n` +
      (shown?.includes("ORDER_TIME_CONFLICT")
        ? "The example's datetime is less than 3 hours from an order of the sample data: " +
          "the example should name a free time slot.\n"
        : "") +
      (code === "401" ? "The key entered in the Authorize dialog was not sent, or not accepted.\n" : ""),
  );
  assert.ok(
    curl?.includes(`Authorization: Bearer ${apiKey}`),
    `the request Swagger UI sent carries the key from the Authorize dialog; its curl command: ${curl}`,
  );
  assert.match(shown ?? "", /location: \/orders\/\w+/i, "the rendered response shows the Location header");
  // The order is really there.
  const location = /location: (\/orders\/\w+)/i.exec(shown ?? "")?.[1];
  const created = await fetch(`${baseUrl}${location}`, { headers: { Authorization: `Bearer ${apiKey}` } });
  assert.equal(created.status, 200, `GET ${location} after the create`);
  assert.deepEqual(offOriginRequests, [], "the page asked for something other than the service");
});
