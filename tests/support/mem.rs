//! Host memory and raw-socket helpers for the body tests (tests/bodies.rs, tests/streaming.rs).

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const MIB: usize = 1 << 20;

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `VmHWM`).
pub fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?;
    Ok(kib * 1024)
}

/// Peak RSS from here on: resets the high-water mark (`clear_refs` 5) when the kernel
/// lets us, and returns the baseline to subtract from a later [`peak`].
pub fn start_peak(pid: u32) -> anyhow::Result<u64> {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    status_bytes(pid, "VmRSS")
}

/// Growth of the high-water mark over `baseline`.
pub fn peak_over(pid: u32, baseline: u64) -> anyhow::Result<u64> {
    Ok(status_bytes(pid, "VmHWM")?.saturating_sub(baseline))
}

/// Writes a request head (and whatever body bytes follow) on a fresh connection.
pub async fn raw_request(addr: SocketAddr, head: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    Ok(stream)
}

/// Sends `body` as chunked transfer encoding in `chunk`-sized pieces.
pub async fn write_chunked(
    stream: &mut TcpStream,
    body: &[u8],
    chunk: usize,
) -> anyhow::Result<()> {
    for piece in body.chunks(chunk) {
        stream
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await?;
        stream.write_all(piece).await?;
        stream.write_all(b"\r\n").await?;
    }
    stream.write_all(b"0\r\n\r\n").await?;
    Ok(())
}

/// Reads one HTTP/1.1 response sent with `Connection: close` (or until `deadline`):
/// status, lower-cased head, body (de-chunked when needed).
pub async fn read_response(
    stream: &mut TcpStream,
    deadline: Duration,
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(deadline, stream.read_to_end(&mut bytes)).await;
    match read {
        Ok(Ok(_)) => {}
        // A reset after the answer (the server closed with unread body) still leaves it.
        Ok(Err(_)) if !bytes.is_empty() => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => bail!("no complete response within {deadline:?}"),
    }
    parse_response(&bytes)
}

pub fn parse_response(bytes: &[u8]) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no response head in {} bytes", bytes.len()))?;
    let head = String::from_utf8_lossy(&bytes[..split]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let mut body = bytes[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Ok((status, head, body))
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol])?.trim(), 16)?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(raw.get(..size).context("truncated chunk")?);
        raw = raw.get(size + 2..).context("truncated chunk end")?;
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Sends `path` two bodies over `limit`: one announced by Content-Length (refused on the
/// head alone; none of it is sent) and one chunked (refused once it crosses the limit;
/// the client keeps sending until the server closes). Both must be answered 413.
pub async fn assert_413_both_ways(
    addr: SocketAddr,
    path: &str,
    limit: usize,
    deadline: Duration,
) -> anyhow::Result<()> {
    let mut announced = raw_request(
        addr,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"),
    )
    .await?;
    let (status, head, _) = read_response(&mut announced, deadline).await?;
    anyhow::ensure!(status == 413, "announced body: {head}");

    let mut chunked = raw_request(
        addr,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
    )
    .await?;
    let piece = vec![b'x'; 64 * 1024];
    for _ in 0..(2 * limit / piece.len()) {
        let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
        if chunked.write_all(&chunk).await.is_err() {
            break; // the server already answered and closed
        }
    }
    let _ = chunked.write_all(b"0\r\n\r\n").await;
    let (status, head, _) = read_response(&mut chunked, deadline).await?;
    anyhow::ensure!(status == 413, "chunked body: {head}");
    Ok(())
}
