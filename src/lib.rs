//! Sluice: serves unmodified Azure Functions Python apps.
//!
//! Start-up, in phases ([`serve`]):
//! 1. [`config`] resolves flags, environment, the config file, host.json and
//!    local.settings.json into one [`config::ServeConfig`]; `serve::run` installs the
//!    shutdown signal handlers ([`shutdown`]) before anything else;
//! 2. `serve::build` prepares the worker launch ([`launch`], [`python`]), loads the keys,
//!    starts the FunctionRpc server ([`rpc`]) and binds both listeners: the bound `App`,
//!    whose addresses are in the `--ready-file` ([`ready_file`]);
//! 3. `App::run` serves the admin listener and the front end, starts the worker slots
//!    ([`lifecycle`]: launch → StartStream → WorkerInit → metadata → load → in the [`pool`]),
//!    in the `lifecycle::StartOrder` (the first alone, then the rest), or, with
//!    `--placeholder`, placeholder workers that wait for an app ([`placeholder`]); then
//!    waits for shutdown and drains, the workers serving on through the drain.
//!
//! A request, one way ([`http`] → [`dispatch`] → [`rpc`] → worker → back as values):
//! the front end reads it; dispatch matches a function ([`functions`], [`router`]), checks
//! its key ([`keys`]), admits it ([`admission`]) and its body ([`budget`]), leases a worker
//! from the [`pool`], converts it ([`convert`]) and sends the InvocationRequest on that
//! worker's session; the answer is converted back into a response ([`body`]). http-v2 apps
//! are forwarded instead ([`proxy`]).
//!
//! The public modules are what the binary, the benches and the tests use; everything
//! else is private to the crate.
//!
//! Modules:
//! - [`config`]: command line + environment + host.json → one validated [`config::ServeConfig`].
//! - [`check`]: `sluice check`: starts one worker and reports what serve would run.
//! - [`serve`]: the two phases, `build` and `App::run`, and the drain.
//! - [`shutdown`]: SIGTERM/SIGINT, counted from the start (the first stops, the next cuts the drain).
//! - [`launch`]: what every worker is launched from (Python, worker environment, app packages).
//! - [`generation`]: one set of worker slots on one version of the app, and what requests
//!   read from it; the dispatcher reads the current one per request.
//! - [`watch`]: `serve --watch`: which file changes count, debounced into batches.
//! - [`reload`]: `serve --watch`: a batch of changes → a new generation, the old one retired.
//! - [`functions`]: the indexed HTTP functions and their routing table.
//! - [`app`]: host-side indexing of v1 apps (`function.json` folders).
//! - [`python`]: finding a Python ≥ 3.13, building the worker's private environment,
//!   installing the app's requirements.
//! - [`http`]: the hyper front end (epoll or io_uring): accepts connections, hands each request to [`dispatch`].
//! - [`router`]: pure matching of (method, path) to a function, its route params and auth level.
//! - [`keys`]: the host secrets file and the key check for an auth level.
//! - [`admission`]: the host.json throttles (429 beyond max outstanding, a bounded execution queue).
//! - [`budget`]: the body budget (request bodies held in memory at once; 503 beyond it).
//! - [`cors`]: the CORS policy (preflight answers, allow-origin headers); pure.
//! - [`dispatch`]: route → auth → pool → rpc for one request; maps every failure to one status.
//! - [`access`]: the opt-in access log, one line per answered request.
//! - [`otlp`]: opt-in OTLP export of Sluice's request spans (bounded queue, background batches).
//! - [`repeats`]: repeated request-path warnings folded into one line and a count per interval.
//! - [`convert`]: every HTTP ⇄ `RpcHttp` conversion.
//! - [`trace`]: W3C trace context: Sluice's span for a request, a child of the caller's.
//! - [`proxy`]: http-v2 apps: the raw request forwarded to the worker's own HTTP server,
//!   its response streamed back.
//! - [`body`]: the response body type (bytes in memory, or a relayed stream).
//! - [`pool`]: which workers are ready and how loaded; picks one.
//! - [`rpc`]: the `FunctionRpc.EventStream` server and one session per worker.
//! - [`lifecycle`]: worker slots: start (in one start order for every mode), health pings,
//!   recycle, restart with backoff.
//! - [`placeholder`]: `serve --placeholder`: idle initialised workers, `POST /admin/assign`.
//! - [`supervisor`]: spawns the Python worker processes and relays their output.
//! - [`worker_config`]: a worker described the platform way (`--worker-config`).
//! - [`proto`]: the generated wire types.
//! - [`metrics`]: every Prometheus family, registered in one place; components only write to it.
//! - [`logging`]: the log output (text or JSON lines; colours only on a terminal).
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz` (never the public port).
//! - [`ready_file`]: `--ready-file`: the bound addresses and the workers in service, as JSON.

// The layout above names private modules on purpose (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

mod access;
mod admin;
pub mod admission;
mod app;
mod body;
mod budget;
pub mod check;
pub mod config;
pub mod convert;
mod cors;
mod dispatch;
pub mod functions;
mod generation;
mod http;
pub mod keys;
mod launch;
mod lifecycle;
pub mod logging;
pub mod metrics;
pub(crate) mod otlp;
mod placeholder;
mod pool;
pub mod proto;
mod proxy;
mod python;
mod ready_file;
mod reload;
pub(crate) mod repeats;
pub mod router;
mod rpc;
pub mod serve;
mod shutdown;
mod supervisor;
pub mod trace;
mod watch;
mod worker_config;
