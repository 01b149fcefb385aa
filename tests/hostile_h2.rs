//! HTTP/2 and connection abuse against the real `sluice` binary serving `examples/hello` with
//! real Python workers, on its public port: rapid reset, CONTINUATION, SETTINGS and PING floods,
//! more streams than the advertised limit, 10 000 headers, clients that never read, and
//! thousands of idle connections. Attacks speak hand-written frames over a `TcpStream` (h2c with
//! prior knowledge) where a client library would refuse to; the `h2` crate is the client where
//! one suffices.
//!
//! Each test asserts what a conforming server answers (a status, RST_STREAM or GOAWAY with the
//! right code), that Sluice's peak resident size stays bounded (`VmHWM` of the sluice process),
//! and that a well-behaved client (`GET /api/hello` on a fresh HTTP/1 connection, every 100 ms)
//! keeps getting 200 within [`PROBE_DEADLINE`] during and after the attack.

mod common;
#[path = "support/mem.rs"]
mod mem;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use common::{Options, Sluice, hello_app};
use mem::MIB;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep, timeout};

/// A well-behaved request must be answered within this, whatever the attack.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// How often the well-behaved client asks.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// How long the server may take to react to an attack (GOAWAY, RST_STREAM, an answer).
const REACT_DEADLINE: Duration = Duration::from_secs(10);

/// Polling step for conditions with a deadline.
const POLL: Duration = Duration::from_millis(20);

/// A write that makes no progress for this long counts as the server pushing back.
const STALL: Duration = Duration::from_secs(1);

/// The attacks run one at a time: on a 2-core machine two at once would measure each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ===========================================================================================
// Raw HTTP/2 frames (RFC 9113 §4, §6) and the little HPACK a request needs (RFC 7541).
// ===========================================================================================

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Appends one frame to `out`.
fn put_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame payloads here are small");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    put_frame(&mut out, kind, flags, stream, payload);
    out
}

fn settings_payload(settings: &[(u16, u32)]) -> Vec<u8> {
    settings
        .iter()
        .flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()[..]].concat())
        .collect()
}

/// An HPACK integer with a `prefix`-bit prefix, the byte's high bits set to `high`.
fn hpack_int(out: &mut Vec<u8>, high: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// An HPACK string literal, not Huffman-coded.
fn hpack_str(out: &mut Vec<u8>, s: &str) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A literal header field without indexing, with a new name.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_str(out, name);
    hpack_str(out, value);
}

/// The header block of `method path` (GET or POST) over http, from the static table
/// (`:method`, `:scheme`) and literals without indexing (`:path`, `:authority`), so that
/// every block stands alone whatever the server's dynamic table holds.
fn request_block(method: &str, path: &str) -> Vec<u8> {
    let mut block = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x86];
    hpack_int(&mut block, 0x00, 4, 4); // :path, name from static index 4
    hpack_str(&mut block, path);
    hpack_int(&mut block, 0x00, 4, 1); // :authority, name from static index 1
    hpack_str(&mut block, "localhost");
    block
}

/// `GET /api/hello` as one HEADERS frame that also ends the stream.
fn get_hello(stream: u32) -> Vec<u8> {
    frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &request_block("GET", "/api/hello"),
    )
}

/// `block` as a HEADERS frame that ends the stream, split into CONTINUATION frames of at most
/// the default SETTINGS_MAX_FRAME_SIZE.
fn header_frames(stream: u32, block: &[u8]) -> Vec<u8> {
    const MAX_FRAME: usize = 16_384;
    let mut out = Vec::with_capacity(block.len() + 9 * (block.len() / MAX_FRAME + 1));
    let pieces: Vec<_> = block.chunks(MAX_FRAME).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let mut flags = if i == 0 { END_STREAM } else { 0 };
        if i + 1 == pieces.len() {
            flags |= END_HEADERS;
        }
        put_frame(&mut out, kind, flags, stream, piece);
    }
    out
}

/// What a raw connection has received so far.
#[derive(Debug, Default)]
struct Seen {
    /// The server's first SETTINGS.
    settings: Option<Vec<(u16, u32)>>,
    settings_acks: usize,
    ping_acks: usize,
    /// `(last stream id, error code)`.
    goaway: Option<(u32, u32)>,
    resets: HashMap<u32, u32>,
    /// Response HEADERS per stream: whether the status is 200. hyper's encoder writes
    /// `:status 200` as the one byte 0x88 (static table index 8); any other status differs.
    responses: HashMap<u32, bool>,
    data_bytes: HashMap<u32, usize>,
    /// The server closed the connection (or reset it).
    closed: bool,
    frames: usize,
}

/// A raw h2c connection: frames go out through `send`, and a task records what comes back
/// (unless the client is the kind that never reads).
struct RawH2 {
    writer: OwnedWriteHalf,
    seen: Arc<Mutex<Seen>>,
    reader: Option<JoinHandle<()>>,
    /// Held, never read, for a client that does not read.
    _unread: Option<OwnedReadHalf>,
}

impl RawH2 {
    /// Connects, sends the preface, `settings` and an ACK of the server's SETTINGS (which it
    /// sends first, before reading ours).
    async fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> anyhow::Result<Self> {
        Self::open(addr, settings, true).await
    }

    /// Like [`RawH2::connect`], but nothing the server sends is ever read.
    async fn connect_never_reading(
        addr: SocketAddr,
        settings: &[(u16, u32)],
    ) -> anyhow::Result<Self> {
        Self::open(addr, settings, false).await
    }

    async fn open(addr: SocketAddr, settings: &[(u16, u32)], read: bool) -> anyhow::Result<Self> {
        let stream = timeout(REACT_DEADLINE, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        stream.set_nodelay(true)?;
        let (read_half, writer) = stream.into_split();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (reader, unread) = if read {
            (
                Some(tokio::spawn(read_frames(read_half, seen.clone()))),
                None,
            )
        } else {
            (None, Some(read_half))
        };
        let mut conn = Self {
            writer,
            seen,
            reader,
            _unread: unread,
        };
        let mut hello = PREFACE.to_vec();
        put_frame(&mut hello, SETTINGS, 0, 0, &settings_payload(settings));
        put_frame(&mut hello, SETTINGS, ACK, 0, &[]);
        conn.send(&hello).await?;
        Ok(conn)
    }

    /// Writes `bytes`; fails if the server is gone or has not taken them within [`STALL`].
    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match timeout(STALL, self.writer.write_all(bytes)).await {
            Ok(result) => result.context("write"),
            Err(_) => bail!("the server took no bytes for {STALL:?}"),
        }
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `done` holds for what has been received, or fails after `deadline`.
    async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&Seen) -> bool,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + deadline;
        loop {
            if done(&self.seen()) {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!(
                    "no {what} within {deadline:?}; received {:?}",
                    self.summary()
                );
            }
            sleep(POLL).await;
        }
    }

    /// A short description of what arrived, for failure messages.
    fn summary(&self) -> String {
        let seen = self.seen();
        format!(
            "frames={} settings={:?} settings_acks={} ping_acks={} goaway={:?} resets={} responses={} closed={}",
            seen.frames,
            seen.settings,
            seen.settings_acks,
            seen.ping_acks,
            seen.goaway,
            seen.resets.len(),
            seen.responses.len(),
            seen.closed
        )
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

/// Reads frames into `seen` until the connection ends.
async fn read_frames(mut reader: OwnedReadHalf, seen: Arc<Mutex<Seen>>) {
    let mut head = [0u8; 9];
    loop {
        if reader.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        if reader.read_exact(&mut payload).await.is_err() {
            break;
        }
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.frames += 1;
        let word = |at: usize| {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match kind {
            SETTINGS if flags & ACK != 0 => seen.settings_acks += 1,
            SETTINGS if seen.settings.is_none() => {
                let pairs = payload
                    .chunks_exact(6)
                    .map(|c| {
                        let id = u16::from_be_bytes([c[0], c[1]]);
                        (id, u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
                    })
                    .collect();
                seen.settings = Some(pairs);
            }
            PING if flags & ACK != 0 => seen.ping_acks += 1,
            GOAWAY => {
                if let (Some(last), Some(code)) = (word(0), word(4)) {
                    seen.goaway = Some((last & 0x7fff_ffff, code));
                }
            }
            RST_STREAM => {
                if let Some(code) = word(0) {
                    seen.resets.insert(stream, code);
                }
            }
            HEADERS => {
                let ok = payload.first() == Some(&0x88);
                seen.responses.entry(stream).or_insert(ok);
            }
            DATA => *seen.data_bytes.entry(stream).or_default() += len,
            _ => {}
        }
    }
    seen.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
}

// ===========================================================================================
// The well-behaved client and the memory gauge.
// ===========================================================================================

/// What the well-behaved client saw.
#[derive(Debug, Default)]
struct ProbeReport {
    answered: usize,
    slowest: Duration,
    failures: Vec<String>,
}

/// `GET /api/hello` every [`PROBE_EVERY`] on a fresh HTTP/1 connection, until finished.
struct Probe {
    stop: watch::Sender<bool>,
    task: JoinHandle<ProbeReport>,
}

impl Probe {
    fn start(sluice: &Sluice) -> Self {
        let url = sluice.url("/api/hello");
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            // No pooled connections: every probe also goes through the accept path.
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .expect("a plain reqwest client builds");
            let mut report = ProbeReport::default();
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return report,
                    _ = tick.tick() => {}
                }
                let started = Instant::now();
                match timeout(PROBE_DEADLINE, get_text(&client, &url)).await {
                    Ok(Ok((200, body))) if body == "Hello, world!" => {
                        report.answered += 1;
                        report.slowest = report.slowest.max(started.elapsed());
                    }
                    Ok(Ok((status, body))) => report.failures.push(format!("{status} {body:?}")),
                    Ok(Err(error)) => report.failures.push(format!("{error:#}")),
                    Err(_) => report
                        .failures
                        .push(format!("no answer in {PROBE_DEADLINE:?}")),
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the client; fails if any of its requests failed or none was made.
    async fn finish(self, during: &str) -> anyhow::Result<ProbeReport> {
        let _ = self.stop.send(true);
        let report = self.task.await.context("the probe task")?;
        eprintln!(
            "probe during {during}: {} answered, slowest {:?}, {} failed",
            report.answered,
            report.slowest,
            report.failures.len()
        );
        ensure!(
            report.failures.is_empty(),
            "a well-behaved client failed during {during}: {:?}",
            &report.failures[..report.failures.len().min(5)]
        );
        ensure!(report.answered > 0, "no probe ran during {during}");
        Ok(report)
    }
}

async fn get_text(client: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// After an attack: a fresh well-behaved request is answered 200 within [`PROBE_DEADLINE`].
async fn assert_served_promptly(sluice: &Sluice, after: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let answer = timeout(
        PROBE_DEADLINE,
        get_text(&common::client(), &sluice.url("/api/hello")),
    )
    .await
    .with_context(|| format!("GET /api/hello after {after}: no answer in {PROBE_DEADLINE:?}"))?
    .with_context(|| format!("GET /api/hello after {after}"))?;
    ensure!(
        answer == (200, "Hello, world!".to_owned()),
        "after {after}: {answer:?}"
    );
    eprintln!("after {after}: answered in {:?}", started.elapsed());
    Ok(())
}

/// Growth of Sluice's peak resident size from the moment it is created.
struct Rss {
    pid: u32,
    baseline: u64,
}

impl Rss {
    fn start(sluice: &Sluice) -> anyhow::Result<Self> {
        let pid = sluice.pid()?;
        Ok(Self {
            pid,
            baseline: mem::start_peak(pid)?,
        })
    }

    /// Fails if the peak grew by `limit` or more; returns the growth.
    fn assert_below(&self, limit: usize, during: &str) -> anyhow::Result<u64> {
        let growth = mem::peak_over(self.pid, self.baseline)?;
        let now = mem::status_bytes(self.pid, "VmRSS")?;
        eprintln!(
            "sluice memory during {during}: baseline {} MiB, peak +{:.1} MiB, now {} MiB",
            self.baseline / MIB as u64,
            growth as f64 / MIB as f64,
            now / MIB as u64
        );
        ensure!(
            growth < limit as u64,
            "sluice's peak RSS grew by {:.1} MiB during {during} (limit {} MiB)",
            growth as f64 / MIB as f64,
            limit / MIB
        );
        Ok(growth)
    }
}

/// The sum of every sample of the metric family `name` on the admin listener.
async fn metric_sum(sluice: &Sluice, name: &str) -> anyhow::Result<f64> {
    Ok(sluice
        .metrics()
        .await?
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// One attack's setting: Sluice (warmed up), its memory gauge and the well-behaved client,
/// all started before the attack begins.
struct Attack {
    sluice: Sluice,
    rss: Rss,
    probe: Probe,
}

impl Attack {
    async fn start() -> anyhow::Result<Attack> {
        let sluice = start_hello().await?;
        let rss = Rss::start(&sluice)?;
        let probe = Probe::start(&sluice);
        Ok(Attack { sluice, rss, probe })
    }

    /// The usual end of an attack: the well-behaved client never failed, a fresh request
    /// is answered at once, and Sluice's peak memory grew by less than `limit`.
    async fn end(self, during: &str, limit: usize) -> anyhow::Result<()> {
        self.probe.finish(during).await?;
        assert_served_promptly(&self.sluice, during).await?;
        self.rss.assert_below(limit, during)?;
        Ok(())
    }
}

/// Starts Sluice on `examples/hello`, warmed up (one request served), so that the memory
/// baseline includes what the first request allocates.
async fn start_hello() -> anyhow::Result<Sluice> {
    let sluice = Sluice::start(Options::new(hello_app())).await?;
    assert_served_promptly(&sluice, "start-up").await?;
    Ok(sluice)
}

// ===========================================================================================
// The attacks.
// ===========================================================================================

#[tokio::test]
async fn rapid_reset_gets_goaway_and_others_are_still_served() -> anyhow::Result<()> {
    const STREAMS: u32 = 10_000;
    /// HEADERS + RST_STREAM pairs per write, alternating by connection: many in one TCP
    /// segment as in the CVE's attack, and one at a time, so that the server reads each
    /// stream before its reset (the case its pending-accept counter cannot see).
    const PAIRS_PER_WRITE: [u32; 2] = [50, 1];
    let _serial = SERIAL.lock().await;
    let attack = Attack::start().await?;
    let addr = attack.sluice.addr();

    let mut sent = 0u32;
    let mut connections = 0;
    let mut goaways = HashMap::<u32, usize>::new();
    while sent < STREAMS {
        connections += 1;
        let mut conn = RawH2::connect(addr, &[]).await?;
        let mut stream = 1u32;
        let mut on_this = 0;
        while sent < STREAMS && conn.seen().goaway.is_none() {
            let mut batch = Vec::new();
            let pairs = PAIRS_PER_WRITE[connections % 2];
            for _ in 0..pairs {
                batch.extend(get_hello(stream));
                put_frame(&mut batch, RST_STREAM, 0, stream, &CANCEL.to_be_bytes());
                stream += 2;
            }
            if conn.send(&batch).await.is_err() {
                break; // the server has hung up
            }
            sent += pairs;
            on_this += pairs;
        }
        conn.wait_for("GOAWAY", REACT_DEADLINE, |s| s.goaway.is_some())
            .await
            .with_context(|| format!("connection {connections} after {on_this} reset streams"))?;
        let (_, code) = conn.seen().goaway.expect("waited for it");
        *goaways.entry(code).or_default() += 1;
        conn.wait_for("close after GOAWAY", REACT_DEADLINE, |s| s.closed)
            .await?;
    }
    eprintln!(
        "rapid reset: {sent} streams over {connections} connections, GOAWAY codes {goaways:?}"
    );
    ensure!(
        goaways.keys().all(|&code| code == ENHANCE_YOUR_CALM),
        "GOAWAY codes {goaways:?}"
    );

    // Few of the reset streams reached the dispatcher (each would be a Python invocation).
    let dispatched = metric_sum(&attack.sluice, "sluice_http_requests_total").await?
        + metric_sum(&attack.sluice, "sluice_client_disconnects_total").await?;
    eprintln!("rapid reset: {dispatched} of {sent} streams reached the dispatcher");
    ensure!(
        dispatched < f64::from(STREAMS / 4),
        "{dispatched} of {sent} reset streams were dispatched"
    );
    attack.end("rapid reset", 64 * MIB).await
}

#[tokio::test]
async fn continuation_flood_gets_goaway() -> anyhow::Result<()> {
    /// Bytes of CONTINUATION frames offered per connection: far more than socket buffers hold,
    /// so a server that stops reading cuts the flood off.
    const FLOOD_BYTES: usize = 64 * MIB;
    let _serial = SERIAL.lock().await;
    let attack = Attack::start().await?;
    let addr = attack.sluice.addr();

    // Empty CONTINUATIONs (nothing for a size limit to count), then full-size ones carrying
    // header literals (what a size limit must count).
    let mut filler = Vec::new();
    while filler.len() < 16_000 {
        hpack_literal(&mut filler, "x-filler", &"f".repeat(200));
    }
    for (case, payload) in [("empty", Vec::new()), ("16 KB", filler)] {
        let mut conn = RawH2::connect(addr, &[]).await?;
        // A request's HEADERS without END_HEADERS: the header block never ends.
        conn.send(&frame(
            HEADERS,
            END_STREAM,
            1,
            &request_block("GET", "/api/hello"),
        ))
        .await?;
        let one = frame(CONTINUATION, 0, 1, &payload);
        let per_write = (64 * 1024 / one.len()).max(1);
        let batch = one.repeat(per_write);
        let mut written = 0;
        let cut_off = loop {
            if written >= FLOOD_BYTES {
                break false;
            }
            if conn.send(&batch).await.is_err() {
                break true; // the server has hung up (or stopped reading)
            }
            written += batch.len();
        };
        conn.wait_for("GOAWAY", REACT_DEADLINE, |s| s.goaway.is_some())
            .await
            .with_context(|| format!("{case} CONTINUATION flood"))?;
        let (_, code) = conn.seen().goaway.expect("waited for it");
        eprintln!(
            "CONTINUATION flood ({case}): GOAWAY {code:#x}, {} KiB written before the server hung up",
            written / 1024
        );
        ensure!(
            [ENHANCE_YOUR_CALM, COMPRESSION_ERROR, PROTOCOL_ERROR].contains(&code),
            "{case}: GOAWAY code {code:#x}"
        );
        ensure!(
            cut_off,
            "{case}: the server took all {} MiB",
            FLOOD_BYTES / MIB
        );
        conn.wait_for("close after GOAWAY", REACT_DEADLINE, |s| s.closed)
            .await?;
    }

    attack.end("CONTINUATION floods", 64 * MIB).await
}

#[tokio::test]
async fn settings_and_ping_floods_are_acked_and_bounded() -> anyhow::Result<()> {
    /// Frames of each kind sent by the client that reads the answers.
    const FRAMES: usize = 20_000;
    /// Bytes a never-reading client may try to push: far more than socket buffers hold.
    const UNREAD_BYTES: usize = 256 * MIB;
    let _serial = SERIAL.lock().await;
    let attack = Attack::start().await?;
    let addr = attack.sluice.addr();

    // A client that reads: every SETTINGS and PING is acknowledged (RFC 9113 §6.5.3, §6.7),
    // or the connection is refused with ENHANCE_YOUR_CALM; if it survives, it still serves.
    let mut conn = RawH2::connect(addr, &[]).await?;
    let mut batch = Vec::new();
    for i in 0..1000u64 {
        put_frame(
            &mut batch,
            SETTINGS,
            0,
            0,
            &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
        );
        put_frame(&mut batch, PING, 0, 0, &i.to_be_bytes());
    }
    let mut sent = 0;
    while sent < FRAMES && conn.seen().goaway.is_none() {
        conn.send(&batch)
            .await
            .context("flooding SETTINGS and PING")?;
        sent += 1000;
    }
    conn.wait_for("every ACK or a GOAWAY", REACT_DEADLINE, |s| {
        s.goaway.is_some() || (s.settings_acks > sent && s.ping_acks >= sent)
    })
    .await?;
    let goaway = conn.seen().goaway;
    eprintln!("SETTINGS/PING flood: {sent} each sent, {}", conn.summary());
    match goaway {
        Some((_, code)) => ensure!(code == ENHANCE_YOUR_CALM, "GOAWAY {code:#x}"),
        None => {
            conn.send(&get_hello(1)).await?;
            conn.wait_for("a response after the flood", REACT_DEADLINE, |s| {
                s.responses.contains_key(&1)
            })
            .await?;
            ensure!(
                conn.seen().responses[&1],
                "the request after the flood was not a 200"
            );
        }
    }
    drop(conn);

    // A client that never reads its ACKs: the server stops reading once its own writes back
    // up, so the flood stalls in the socket buffers instead of growing Sluice's memory.
    for (case, one) in [
        ("PING", frame(PING, 0, 0, &[7; 8])),
        (
            "SETTINGS",
            frame(
                SETTINGS,
                0,
                0,
                &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
            ),
        ),
    ] {
        let mut conn = RawH2::connect_never_reading(addr, &[]).await?;
        let batch = one.repeat(64 * 1024 / one.len());
        let mut written = 0;
        let stalled = loop {
            if written >= UNREAD_BYTES {
                break false;
            }
            if conn.send(&batch).await.is_err() {
                break true;
            }
            written += batch.len();
        };
        eprintln!(
            "{case} flood, never read: {} MiB taken before the server pushed back",
            written / MIB
        );
        ensure!(
            stalled,
            "{case}: the server took {} MiB from a client that reads nothing",
            written / MIB
        );
    }

    attack.end("SETTINGS and PING floods", 64 * MIB).await
}

#[tokio::test]
async fn streams_beyond_the_advertised_limit_are_refused() -> anyhow::Result<()> {
    const EXTRA: u32 = 100;
    let _serial = SERIAL.lock().await;
    let attack = Attack::start().await?;
    let addr = attack.sluice.addr();

    let mut conn = RawH2::connect(addr, &[]).await?;
    conn.wait_for("the server's SETTINGS", REACT_DEADLINE, |s| {
        s.settings.is_some()
    })
    .await?;
    let limit = conn
        .seen()
        .settings
        .as_ref()
        .and_then(|settings| {
            settings
                .iter()
                .find(|(id, _)| *id == SETTINGS_MAX_CONCURRENT_STREAMS)
                .map(|(_, value)| *value)
        })
        .context("the server advertises no SETTINGS_MAX_CONCURRENT_STREAMS")?;
    eprintln!("SETTINGS_MAX_CONCURRENT_STREAMS = {limit}");
    ensure!((1..=1000).contains(&limit), "limit {limit}");

    // Requests whose bodies never end hold their streams open.
    let streams: Vec<u32> = (0..limit + EXTRA).map(|i| 1 + 2 * i).collect();
    let mut opening = Vec::new();
    for &stream in &streams {
        put_frame(
            &mut opening,
            HEADERS,
            END_HEADERS,
            stream,
            &request_block("POST", "/api/binary_echo"),
        );
    }
    conn.send(&opening).await?;
    let (allowed, beyond) = streams.split_at(limit as usize);
    conn.wait_for(
        "a reset of every stream beyond the limit",
        REACT_DEADLINE,
        |s| beyond.iter().all(|id| s.resets.contains_key(id)),
    )
    .await?;
    {
        let seen = conn.seen();
        for id in beyond {
            let code = seen.resets[id];
            ensure!(
                code == REFUSED_STREAM || code == PROTOCOL_ERROR,
                "stream {id} beyond the limit reset with {code:#x}"
            );
        }
        let reset_within: Vec<_> = allowed
            .iter()
            .filter(|id| seen.resets.contains_key(id))
            .collect();
        ensure!(
            reset_within.is_empty(),
            "streams within the limit were reset: {reset_within:?}"
        );
        ensure!(seen.goaway.is_none(), "GOAWAY {:?}", seen.goaway);
    }

    // The streams within the limit are still served: finish a few of them.
    let finished = &allowed[..5];
    let mut bodies = Vec::new();
    for &stream in finished {
        put_frame(&mut bodies, DATA, END_STREAM, stream, b"ping");
    }
    conn.send(&bodies).await?;
    conn.wait_for("answers on the finished streams", REACT_DEADLINE, |s| {
        finished.iter().all(|id| s.data_bytes.get(id) == Some(&4))
    })
    .await?;
    ensure!(
        finished.iter().all(|id| conn.seen().responses[id]),
        "{}",
        conn.summary()
    );

    attack.probe.finish("streams beyond the limit").await?;
    drop(conn);
    assert_served_promptly(&attack.sluice, "streams beyond the limit").await?;
    attack
        .rss
        .assert_below(64 * MIB, "streams beyond the limit")?;
    Ok(())
}

/// An h2 client connection (the `h2` crate) and the task driving it.
async fn h2_client(
    addr: SocketAddr,
) -> anyhow::Result<(
    h2::client::SendRequest<Bytes>,
    JoinHandle<Result<(), h2::Error>>,
)> {
    let tcp = TcpStream::connect(addr).await?;
    let (send, connection) = h2::client::handshake(tcp).await?;
    Ok((send, tokio::spawn(connection)))
}

/// Sends `request` (no body) and waits for the response head.
async fn h2_request(
    send: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> Result<http::Response<h2::RecvStream>, h2::Error> {
    let mut ready = send.clone().ready().await?;
    let (response, _) = ready.send_request(request, true)?;
    timeout(REACT_DEADLINE, response)
        .await
        .unwrap_or_else(|_| panic!("no response within {REACT_DEADLINE:?}"))
}

/// How an HTTP/2 request was answered.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Status(u16),
    GoAway(h2::Reason),
}

/// `GET url` with `x-filler: a` `count` times, on `send`'s connection.
async fn h2_headers_answer(
    send: &h2::client::SendRequest<Bytes>,
    url: &str,
    count: usize,
) -> anyhow::Result<Answer> {
    let mut request = http::Request::get(url).body(())?;
    for _ in 0..count {
        request
            .headers_mut()
            .append("x-filler", http::HeaderValue::from_static("a"));
    }
    match h2_request(send, request).await {
        Ok(response) => Ok(Answer::Status(response.status().as_u16())),
        Err(error) if error.is_go_away() => Ok(Answer::GoAway(
            error.reason().context("a GOAWAY has a reason")?,
        )),
        Err(error) => Err(error.into()),
    }
}

#[tokio::test]
async fn ten_thousand_headers_get_431_on_http2_and_http1() -> anyhow::Result<()> {
    const HEADER_COUNT: usize = 10_000;
    let _serial = SERIAL.lock().await;
    let attack = Attack::start().await?;
    let addr = attack.sluice.addr();
    let url = attack.sluice.url("/api/hello");

    // HTTP/2, raw frames (a client library gives up writing once the server hangs up, before
    // it has read the answer): HPACK indexes a repeated header, so 10 000 copies fit one small
    // HEADERS frame and only the decoded list shows the size; 10 000 different headers span
    // many CONTINUATION frames. A conforming server answers the stream (431) or, for a list
    // far over its limit, refuses the connection (GOAWAY ENHANCE_YOUR_CALM, as h2 does past
    // twice its limit).
    let mut repeated = request_block("GET", "/api/hello");
    repeated.push(0x40); // literal with incremental indexing: dynamic index 62
    hpack_str(&mut repeated, "x-filler");
    hpack_str(&mut repeated, "a");
    repeated.extend(std::iter::repeat_n(0xbe, HEADER_COUNT - 1)); // indexed 62
    let mut distinct = request_block("GET", "/api/hello");
    for i in 0..HEADER_COUNT {
        hpack_literal(&mut distinct, &format!("x-header-{i}"), "a");
    }
    for (case, block) in [
        ("one header 10 000 times", repeated),
        ("10 000 different headers", distinct),
    ] {
        let mut conn = RawH2::connect(addr, &[]).await?;
        let _ = conn.send(&header_frames(1, &block)).await;
        conn.wait_for("an answer or a GOAWAY", REACT_DEADLINE, |s| {
            s.goaway.is_some() || s.responses.contains_key(&1)
        })
        .await
        .context(case)?;
        let seen = conn.seen();
        eprintln!(
            "HTTP/2, {case}: GOAWAY {:?}, response {:?}",
            seen.goaway,
            seen.responses.get(&1)
        );
        match seen.goaway {
            Some((_, code)) => ensure!(code == ENHANCE_YOUR_CALM, "{case}: GOAWAY {code:#x}"),
            None => ensure!(!seen.responses[&1], "{case}: answered 200"),
        }
    }

    // Just over the limit (1 000 copies, about 40 KiB decoded): 431, and the connection
    // goes on serving.
    let (send, connection) = h2_client(addr).await?;
    let answer = h2_headers_answer(&send, &url, 1000).await?;
    ensure!(
        answer == Answer::Status(431),
        "HTTP/2, 1 000 headers: {answer:?}"
    );
    let response = h2_request(&send, http::Request::get(&url).body(())?).await?;
    ensure!(
        response.status() == 200,
        "HTTP/2 after the 431: {}",
        response.status()
    );
    drop(send);
    connection.abort();

    // HTTP/1: 10 000 header lines.
    let lines: String = (0..HEADER_COUNT)
        .map(|i| format!("X-Header-{i}: a\r\n"))
        .collect();
    let mut stream = mem::raw_request(
        addr,
        &format!("GET /api/hello HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n"),
    )
    .await?;
    let (status, head, _) = mem::read_response(&mut stream, REACT_DEADLINE).await?;
    ensure!(status == 431, "HTTP/1, 10 000 headers: {head}");

    attack.end("10 000 headers", 64 * MIB).await
}

#[tokio::test]
async fn clients_that_never_read_keep_memory_bounded() -> anyhow::Result<()> {
    /// Each request echoes this much: its response is as large.
    const BODY: usize = 256 * 1024;
    /// Requests each client tries to send: 256 MiB of answers nobody reads.
    const REQUESTS: usize = 1024;
    let _serial = SERIAL.lock().await;
    let attack = Attack::start().await?;
    let addr = attack.sluice.addr();

    // HTTP/1: pipelined echo requests, never reading an answer. hyper answers one request at
    // a time, so once the answers back up it stops reading requests and the writes stall.
    let mut stream = TcpStream::connect(addr).await?;
    let mut request =
        format!("POST /api/binary_echo HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n")
            .into_bytes();
    request.extend(std::iter::repeat_n(b'x', BODY));
    let mut written = 0;
    while written < REQUESTS {
        match timeout(STALL, stream.write_all(&request)).await {
            Ok(Ok(())) => written += 1,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    eprintln!("HTTP/1, never read: {written} of {REQUESTS} requests taken");
    ensure!(
        written < REQUESTS,
        "the server read all {REQUESTS} requests without their answers being read"
    );

    // HTTP/2: the client opens no flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0), so no
    // answer can be sent; each stream holds its answer until the stream limit refuses more.
    let mut conn = RawH2::connect_never_reading(addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await?;
    let body = vec![b'y'; BODY];
    let mut opened = 0;
    for i in 0..REQUESTS as u32 {
        let stream = 1 + 2 * i;
        let mut frames = frame(
            HEADERS,
            END_HEADERS,
            stream,
            &request_block("POST", "/api/binary_echo"),
        );
        for (n, chunk) in body.chunks(16 * 1024).enumerate() {
            let last = n == BODY / (16 * 1024) - 1;
            put_frame(
                &mut frames,
                DATA,
                if last { END_STREAM } else { 0 },
                stream,
                chunk,
            );
        }
        if conn.send(&frames).await.is_err() {
            break;
        }
        opened += 1;
    }
    eprintln!("HTTP/2, never read: {opened} of {REQUESTS} streams taken");
    ensure!(
        opened < REQUESTS,
        "the server took all {REQUESTS} streams without their answers being read"
    );

    attack
        .rss
        .assert_below(128 * MIB, "clients that never read")?;
    attack.probe.finish("clients that never read").await?;
    drop(stream);
    drop(conn);
    assert_served_promptly(&attack.sluice, "clients that never read").await?;
    Ok(())
}

/// The soft limit on open files of this process.
fn open_files_limit() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-files line in /proc/self/limits")?;
    line.split_whitespace()
        .nth(3)
        .context("no soft limit")?
        .parse()
        .context("soft limit")
}

/// Raises this process's soft limit on open files to at least `want` (within the hard
/// limit) with prlimit(1), so that no unsafe code is needed; Sluice, started afterwards,
/// inherits it. Returns the limit in force.
fn raise_open_files_limit(want: u64) -> anyhow::Result<u64> {
    let soft = open_files_limit()?;
    if soft >= want {
        return Ok(soft);
    }
    let _ = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:"))
        .status();
    open_files_limit()
}

#[tokio::test]
async fn five_thousand_idle_connections_do_not_starve_a_client() -> anyhow::Result<()> {
    const CONNECTIONS: usize = 5_000;
    /// Descriptors kept free for everything else (workers, pipes, the probe).
    const SPARE_FDS: u64 = 200;
    let _serial = SERIAL.lock().await;
    let limit = raise_open_files_limit(CONNECTIONS as u64 + SPARE_FDS)?;
    let connections = CONNECTIONS.min(limit.saturating_sub(SPARE_FDS) as usize);
    if connections < CONNECTIONS {
        eprintln!("open-files limit {limit}: only {connections} idle connections");
    }
    let attack = Attack::start().await?;
    let addr = attack.sluice.addr();

    // Every third one an HTTP/2 client that sent its preface and then nothing.
    let started = Instant::now();
    let mut open = Vec::with_capacity(connections);
    // One after another: parallel bursts of connects only overflowed the accept queue
    // (a dropped SYN costs the probe a 1 s retransmit) and were slower.
    for i in 0..connections {
        let mut stream = timeout(REACT_DEADLINE, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connection {i} timed out"))?
            .with_context(|| format!("connection {i}"))?;
        if i % 3 == 0 {
            let mut hello = PREFACE.to_vec();
            put_frame(&mut hello, SETTINGS, 0, 0, &[]);
            stream.write_all(&hello).await?;
        }
        open.push(stream);
    }
    eprintln!(
        "{connections} idle connections open after {:?}",
        started.elapsed()
    );
    // Served while they are all open, on a connection of its own and on the last idle one.
    assert_served_promptly(&attack.sluice, "opening the idle connections").await?;
    let last = open.last_mut().context("no connections")?;
    last.write_all(b"GET /api/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let (status, head, _) = mem::read_response(last, REACT_DEADLINE).await?;
    ensure!(status == 200, "the last idle connection: {head}");

    attack
        .rss
        .assert_below(128 * MIB, "5 000 idle connections")?;
    attack.probe.finish("5 000 idle connections").await?;
    drop(open);
    assert_served_promptly(&attack.sluice, "closing the idle connections").await?;
    Ok(())
}
