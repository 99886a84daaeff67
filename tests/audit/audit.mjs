// Runs the graphql-http server audit (GraphQL over HTTP conformance) against
// the URL given as the only argument and prints one JSON report on stdout:
//
//   { "url": "...", "graphql_http": "1.23.1",
//     "results": [ { "id", "name", "status", "reason"?, "response"? }, ... ] }
//
// `status` is graphql-http's: "ok", "notice", "warn" (a SHOULD not met) or
// "error" (a MUST not met). A failed audit also carries the HTTP status and
// content type of the response it judged, and the start of its body when it
// can still be read. Exit code 0 when the report was printed, 2 on bad usage,
// 1 when the audit itself could not run.

import { readFileSync } from 'node:fs';
import { serverAudits } from 'graphql-http';

const BODY_PREFIX_CHARS = 300;

const url = process.argv[2];
if (!url || process.argv.length !== 3) {
  console.error('usage: node audit.mjs <graphql url>');
  process.exit(2);
}

const version = JSON.parse(
  readFileSync(new URL('./node_modules/graphql-http/package.json', import.meta.url)),
).version;

/** What the report says about the response a failed audit judged. */
async function describe(response) {
  if (!response || typeof response.status !== 'number') return undefined;
  const out = {
    status: response.status,
    content_type: response.headers.get('content-type'),
  };
  try {
    const text = await response.clone().text();
    out.body = text.slice(0, BODY_PREFIX_CHARS);
  } catch {
    // The audit consumed the body already; status and type are what is left.
  }
  return out;
}

const results = [];
// One audit at a time, in graphql-http's order, so that the report is stable
// and the server sees no burst.
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  let result;
  try {
    result = await audit.fn();
  } catch (err) {
    // graphql-http throws only on a fatal error (e.g. connection refused).
    console.error(`audit ${audit.id} (${audit.name}) could not run: ${err?.stack ?? err}`);
    process.exit(1);
  }
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    entry.reason = result.reason;
    entry.response = await describe(result.response);
  }
  results.push(entry);
}

process.stdout.write(JSON.stringify({ url, graphql_http: version, results }, null, 2) + '\n');
