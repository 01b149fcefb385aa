// Mixed traffic: sync and async hello at the same time, as two scenarios with their own
// thresholds, to see whether one kind of function slows the other down.
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:7071 loadtest/k6/mixed.js
// Env: BASE_URL, SYNC_PATH (/api/sync_hello), ASYNC_PATH (/api/async_hello), SYNC_VUS (8),
// ASYNC_VUS (8), DURATION (20s), P95_MS (100).
// Against examples/hello, async_hello sleeps 10 ms: raise P95_MS accordingly.
import http from 'k6/http';
import { check } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:7071';
const SYNC_PATH = __ENV.SYNC_PATH || '/api/sync_hello';
const ASYNC_PATH = __ENV.ASYNC_PATH || '/api/async_hello';
const DURATION = __ENV.DURATION || '20s';
const P95_MS = Number(__ENV.P95_MS || 100);

export const options = {
  scenarios: {
    sync: { executor: 'constant-vus', exec: 'syncHello', vus: Number(__ENV.SYNC_VUS || 8), duration: DURATION },
    async: { executor: 'constant-vus', exec: 'asyncHello', vus: Number(__ENV.ASYNC_VUS || 8), duration: DURATION },
  },
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    'http_req_duration{scenario:sync}': [`p(95)<${P95_MS}`],
    'http_req_duration{scenario:async}': [`p(95)<${P95_MS}`],
  },
};

function hello(path) {
  const res = http.get(`${BASE_URL}${path}`);
  check(res, {
    'status is 200': (r) => r.status === 200,
    'body says hello': (r) => typeof r.body === 'string' && r.body.startsWith('Hello'),
  });
}

export function syncHello() {
  hello(SYNC_PATH);
}

export function asyncHello() {
  hello(ASYNC_PATH);
}
