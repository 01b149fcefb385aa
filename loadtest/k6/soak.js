// The load half of loadtest/soak.py (the soak under worker kills). One console line per request,
//   R <start> <end> <duration> <status> <k6 error code>
// (start, end: ms since the epoch, the VU's clock around the call; duration: k6's http_req_duration
// in ms, 0 when no response came), so soak.py can place every request against the kill times and
// compute latency per time window (k6's --out json/csv would write about a dozen samples per request).
// Run it through soak.py, which passes --console-output; by hand:
//   k6 run --no-usage-report -q --console-output requests.log -e BASE_URL=http://127.0.0.1:7071 \
//     -e MODE=open -e RATE=2000 -e DURATION=60s loadtest/k6/soak.js
// Env: BASE_URL, URL_PATH (/api/async_hello), MODE (`open`: constant-arrival-rate at RATE req/s with
// PRE_VUS/MAX_VUS; `closed`: constant-vus with VUS, to measure the maximum rate), DURATION (30s),
// TIMEOUT (the request timeout: a request still unanswered then is a hung request, 10s),
// SUMMARY_FILE (where handleSummary writes k6's summary as JSON; none when unset).
// No thresholds: soak.py judges the run.
import http from 'k6/http';

const URL = `${__ENV.BASE_URL || 'http://127.0.0.1:7071'}${__ENV.URL_PATH || '/api/async_hello'}`;
const TIMEOUT = __ENV.TIMEOUT || '10s';
const DURATION = __ENV.DURATION || '30s';

const scenario =
  (__ENV.MODE || 'open') === 'closed'
    ? { executor: 'constant-vus', vus: Number(__ENV.VUS || 64), duration: DURATION }
    : {
        executor: 'constant-arrival-rate',
        rate: Number(__ENV.RATE || 500),
        timeUnit: '1s',
        duration: DURATION,
        preAllocatedVUs: Number(__ENV.PRE_VUS || 100),
        maxVUs: Number(__ENV.MAX_VUS || 400),
      };

export const options = {
  scenarios: { soak: scenario },
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(99)', 'max'],
};

export default function () {
  const start = Date.now();
  const res = http.get(URL, { timeout: TIMEOUT });
  console.log(`R ${start} ${Date.now()} ${res.timings.duration.toFixed(3)} ${res.status} ${res.error_code}`);
}

export function handleSummary(data) {
  return __ENV.SUMMARY_FILE ? { [__ENV.SUMMARY_FILE]: JSON.stringify(data) } : {};
}
