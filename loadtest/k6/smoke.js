// Smoke test: a few VUs for a few seconds; every response must be 200 with a hello body.
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:7071 loadtest/k6/smoke.js
// Env: BASE_URL (required in practice), PATHS (comma-separated, default both fixture
// hellos), VUS (4), DURATION (5s). Works against loadtest/apps/hello_async_sync,
// examples/hello and loadtest/asgi_hello.py.
import http from 'k6/http';
import { check } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:7071';
const PATHS = (__ENV.PATHS || '/api/sync_hello,/api/async_hello').split(',');

export const options = {
  vus: Number(__ENV.VUS || 4),
  duration: __ENV.DURATION || '5s',
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
  },
};

export default function () {
  for (const path of PATHS) {
    const res = http.get(`${BASE_URL}${path}`);
    check(res, {
      'status is 200': (r) => r.status === 200,
      'body says hello': (r) => typeof r.body === 'string' && r.body.startsWith('Hello'),
    });
  }
}
