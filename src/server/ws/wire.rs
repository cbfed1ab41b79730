//! The write side of a `/ws` connection: the daemon's messages framed without copying their payload.
//!
//! tokio-tungstenite still does the handshake's socket, reads and parses what the client sends,
//! answers its pings and runs the close handshake. But tungstenite writes a message by copying
//! header and payload into a per-connection buffer, and with a hundred viewers that was a hundred
//! copies of every 66 KiB JPEG per frame (14 of the fan-out's 52 µs per delivered frame,
//! docs/design.md). Here a
//! message is queued as its 2-10 byte header and the broadcast `Bytes` it came in, shared by every
//! client, and the queue goes out in one vectored write.
//!
//! [`Wire`] is the socket tungstenite is given. Whatever tungstenite writes (pongs, the close
//! frame) joins the same queue behind the daemon's frames, so the two never interleave inside a
//! frame: tungstenite only ever writes whole frames, and the queue is sent strictly in order.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// WebSocket opcodes the daemon sends itself (RFC 6455, 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opcode {
    Text = 0x1,
    Binary = 0x2,
    Ping = 0x9,
}

/// Most queued pieces handed to one `writev` (a frame is two: header and payload).
const MAX_SLICES: usize = 64;

/// One piece of the queue: a frame header (inline, no allocation) or a shared payload.
enum Chunk {
    Header { bytes: [u8; 10], start: u8, end: u8 },
    Shared(Bytes),
}

impl Chunk {
    /// The header of an unmasked, unfragmented server frame of `len` payload bytes.
    fn header(opcode: Opcode, len: usize) -> Chunk {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | opcode as u8; // FIN: the daemon never fragments
        let end = if len < 126 {
            bytes[1] = len as u8;
            2
        } else if len <= u16::MAX as usize {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Chunk::Header {
            bytes,
            start: 0,
            end,
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Header { bytes, start, end } => &bytes[*start as usize..*end as usize],
            Chunk::Shared(b) => b,
        }
    }

    /// Drops the first `n` bytes (`n` at most the chunk's length).
    fn consume(&mut self, n: usize) {
        match self {
            Chunk::Header { start, .. } => *start += n as u8,
            Chunk::Shared(b) => b.advance(n),
        }
    }
}

/// The socket of one WebSocket connection, with the queue of what is still to be written to it.
pub(crate) struct Wire<S> {
    io: S,
    queue: VecDeque<Chunk>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            queue: VecDeque::new(),
        }
    }

    /// Queues one message; nothing is written until [`Wire::poll_send`].
    pub(crate) fn push(&mut self, opcode: Opcode, payload: Bytes) {
        self.queue.push_back(Chunk::header(opcode, payload.len()));
        if !payload.is_empty() {
            self.queue.push_back(Chunk::Shared(payload));
        }
    }

    /// Bytes queued and not yet written.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.iter().map(|c| c.as_slice().len()).sum()
    }

    /// Writes the queue out, as many pieces per `writev` as fit. Ready once all of it is written.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.queue) {
                *slot = IoSlice::new(chunk.as_slice());
                n += 1;
            }
            let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(written);
        }
        Poll::Ready(Ok(()))
    }

    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(head) = self.queue.front_mut() else {
                break;
            };
            let len = head.as_slice().len();
            if written < len {
                head.consume(written);
                return;
            }
            written -= len;
            self.queue.pop_front();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

/// What tungstenite writes. It is accepted only once everything queued before it is out, so a
/// client that does not read makes tungstenite hold its pong (it keeps the newest one) instead of
/// this queue growing with every ping the client sends.
impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_send(cx))?;
        self.queue
            .push_back(Chunk::Shared(Bytes::copy_from_slice(buf)));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt, SinkExt, StreamExt};
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        let h = |op, len| Chunk::header(op, len).as_slice().to_vec();
        assert_eq!(h(Opcode::Text, 0), [0x81, 0]);
        assert_eq!(h(Opcode::Binary, 125), [0x82, 125]);
        assert_eq!(h(Opcode::Binary, 126), [0x82, 126, 0, 126]);
        assert_eq!(h(Opcode::Ping, 65535), [0x89, 126, 0xff, 0xff]);
        assert_eq!(
            h(Opcode::Binary, 65536),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    /// A client (tungstenite's own parser) reads back every queued message, through a pipe small
    /// enough that the writes are partial, mixed with what tungstenite wrote itself.
    #[tokio::test]
    async fn a_client_reads_every_queued_message_whole_and_in_order() {
        let (server_io, client_io) = tokio::io::duplex(1000);
        let mut server =
            WebSocketStream::from_raw_socket(Wire::new(server_io), Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let big = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(Ok(m)) = client.next().await {
                if m.is_close() {
                    break;
                }
                got.push(m);
            }
            got
        });
        let wire = server.get_mut();
        wire.push(Opcode::Text, Bytes::from_static(b"{\"type\":\"hello\"}"));
        wire.push(Opcode::Binary, big.clone());
        wire.push(Opcode::Binary, Bytes::from_static(b"small"));
        wire.push(Opcode::Binary, Bytes::from(vec![7u8; 300]));
        assert_eq!(wire.queued(), 18 + 70_010 + 7 + 304);
        std::future::poll_fn(|cx| server.get_mut().poll_send(cx))
            .await
            .unwrap();
        assert_eq!(server.get_ref().queued(), 0);
        // tungstenite's own frame goes out behind ours.
        server.send(Message::Close(None)).await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], Message::Text("{\"type\":\"hello\"}".into()));
        assert_eq!(got[1], Message::Binary(big));
        assert_eq!(got[2], Message::Binary(Bytes::from_static(b"small")));
        assert_eq!(got[3], Message::Binary(Bytes::from(vec![7u8; 300])));
    }

    /// A pong tungstenite wants to send waits behind a frame the socket has taken only part of.
    #[tokio::test]
    async fn a_pong_never_cuts_into_a_half_written_frame() {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let (mut from_server, mut to_server) = tokio::io::split(client_io);
        let mut server =
            WebSocketStream::from_raw_socket(Wire::new(server_io), Role::Server, None).await;
        server
            .get_mut()
            .push(Opcode::Binary, Bytes::from(vec![0xabu8; 10_000]));
        // The pipe takes 4 KiB of the 10 KiB frame; the rest stays queued.
        let first = futures_util::future::poll_fn(|cx| Poll::Ready(server.get_mut().poll_send(cx)));
        assert!(first.await.is_pending());
        // A masked, empty ping from the client; tungstenite reads it and wants to answer.
        tokio::io::AsyncWriteExt::write_all(&mut to_server, &[0x89, 0x80, 1, 2, 3, 4])
            .await
            .unwrap();
        let got = server.next().now_or_never().flatten().map(|m| m.unwrap());
        assert!(matches!(got, Some(Message::Ping(_))), "{got:?}");
        let reader = tokio::spawn(async move {
            let mut raw = vec![0u8; 4 + 10_000 + 2];
            from_server.read_exact(&mut raw).await.unwrap();
            raw
        });
        futures_util::future::poll_fn(|cx| server.get_mut().poll_send(cx))
            .await
            .unwrap();
        server.flush().await.unwrap();
        let raw = reader.await.unwrap();
        assert_eq!(raw[..4], [0x82, 126, 0x27, 0x10]);
        assert!(
            raw[4..10_004].iter().all(|&b| b == 0xab),
            "the frame is whole"
        );
        assert_eq!(raw[10_004..], [0x8a, 0], "the pong comes after it");
    }

    /// A client that pings and never reads costs one pending pong, not one per ping.
    #[tokio::test]
    async fn pings_from_a_client_that_does_not_read_do_not_pile_up() {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let (_from_server, mut to_server) = tokio::io::split(client_io);
        let mut server =
            WebSocketStream::from_raw_socket(Wire::new(server_io), Role::Server, None).await;
        server
            .get_mut()
            .push(Opcode::Binary, Bytes::from(vec![0u8; 10_000]));
        let first = futures_util::future::poll_fn(|cx| Poll::Ready(server.get_mut().poll_send(cx)));
        assert!(first.await.is_pending());
        let queued = server.get_ref().queued();
        for _ in 0..500 {
            tokio::io::AsyncWriteExt::write_all(&mut to_server, &[0x89, 0x80, 1, 2, 3, 4])
                .await
                .unwrap();
            while let Some(Some(m)) = server.next().now_or_never() {
                assert!(m.unwrap().is_ping());
            }
        }
        assert_eq!(server.get_ref().queued(), queued);
    }
}
