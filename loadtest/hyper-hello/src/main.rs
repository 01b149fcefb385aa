//! Raw hyper "Hello, world!" server: the ceiling row of the load-test table.
//!
//! `hyper-hello PORT` listens on 127.0.0.1:PORT (0 picks a free port) and answers every
//! request with the same 13-byte body as the Sluice fixture app and loadtest/asgi_hello.py.
//! It logs `listening addr=IP:PORT` on stderr once bound, like `sluice serve`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"Hello, world!";

async fn hello(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|arg| arg.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: hyper-hello PORT");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("listening addr={}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        // Same socket option Sluice sets on accepted connections, so the ceiling is comparable.
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let served = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
            if let Err(error) = served {
                eprintln!("connection error: {error}");
            }
        });
    }
}
