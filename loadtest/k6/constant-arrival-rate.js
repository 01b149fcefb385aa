// Open-model load: a fixed request rate whatever the latency (unlike wrk's closed loop), so
// queueing shows up as latency and dropped iterations instead of as a lower rate.
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:7071 -e RATE=1000 loadtest/k6/constant-arrival-rate.js
// Env: BASE_URL, URL_PATH (/api/sync_hello), RATE (requests/s, 500), DURATION (30s),
// PRE_VUS (50), MAX_VUS (200), P95_MS (50), MAX_FAIL_RATE (0.001).
// Fails (exit 99) when p95 latency, the failure rate or dropped iterations cross the thresholds.
import http from 'k6/http';
import { check } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:7071';
const URL_PATH = __ENV.URL_PATH || '/api/sync_hello';

export const options = {
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 500),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Number(__ENV.PRE_VUS || 50),
      maxVUs: Number(__ENV.MAX_VUS || 200),
    },
  },
  thresholds: {
    http_req_duration: [`p(95)<${Number(__ENV.P95_MS || 50)}`],
    http_req_failed: [`rate<${Number(__ENV.MAX_FAIL_RATE || 0.001)}`],
    checks: ['rate==1'],
    // Iterations k6 could not start because every VU was busy: the target fell behind the rate.
    dropped_iterations: ['count==0'],
  },
};

export default function () {
  const res = http.get(`${BASE_URL}${URL_PATH}`);
  check(res, { 'status is 200': (r) => r.status === 200 });
}
