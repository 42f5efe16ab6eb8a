//! `http_hello`: a minimal HTTP/1.1 keep-alive server that answers every request with
//! `Hello, World!`. A task per connection, on one thread.
//!
//! ```text
//! http_hello [127.0.0.1:8080]        then: curl http://127.0.0.1:8080/
//! ```

use afd_async::{Async, block_on};
use async_executor::LocalExecutor;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::io;
use std::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// Answer each request (headers ending in an empty line; no bodies) until the client closes.
async fn serve(mut stream: Async<TcpStream>) -> io::Result<()> {
    stream.get_ref().set_nodelay(true)?;
    let (mut buf, mut len, mut out) = (vec![0; 8192], 0, Vec::new());
    loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        // Every complete request in the buffer gets its answer; a partial one waits for more.
        let mut start = 0;
        while let Some(end) = buf[start..len].windows(4).position(|w| w == b"\r\n\r\n") {
            out.extend_from_slice(RESPONSE);
            start += end + 4;
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if len == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too large",
            ));
        }
        stream.write_all(&out).await?;
        out.clear();
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
    let ex = LocalExecutor::new();
    block_on(ex.run(async {
        let listener = Async::<TcpListener>::bind(addr)?;
        println!("http_hello on http://{}/", listener.get_ref().local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            ex.spawn(serve(stream)).detach();
        }
    }))
}
