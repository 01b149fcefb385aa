// Large bodies: POST BODY_BYTES (default 1 MiB) to examples/hello's /api/binary_echo and check
// that the same number of bytes comes back.
//   cargo run --release -- serve examples/hello --port 7071 --bind 127.0.0.1
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:7071 loadtest/k6/large-body.js
// Env: BASE_URL, URL_PATH (/api/binary_echo), BODY_BYTES (1048576), VUS (4), DURATION (10s),
// P95_MS (1000).
import http from 'k6/http';
import { check } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:7071';
const URL_PATH = __ENV.URL_PATH || '/api/binary_echo';
const BODY_BYTES = Number(__ENV.BODY_BYTES || 1048576);
// Built once per VU in the init context, not per iteration.
const BODY = 'x'.repeat(BODY_BYTES);

export const options = {
  vus: Number(__ENV.VUS || 4),
  duration: __ENV.DURATION || '10s',
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    http_req_duration: [`p(95)<${Number(__ENV.P95_MS || 1000)}`],
  },
};

export default function () {
  const res = http.post(`${BASE_URL}${URL_PATH}`, BODY, {
    headers: { 'Content-Type': 'application/octet-stream' },
    responseType: 'binary',
  });
  check(res, {
    'status is 200': (r) => r.status === 200,
    'echoed size matches': (r) => r.body !== null && r.body.byteLength === BODY_BYTES,
  });
}
