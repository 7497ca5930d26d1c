//! One long-lived stream connection to a DNS-over-TLS server, shared by every query to it
//! (RFC 7766 6.2.1, RFC 7858 3.4): queries are written as they come, each with an id unique
//! on the connection, and replies are matched by id in whatever order they arrive. A
//! connection the server closed (or that went idle, or stopped answering) is dropped and
//! the next query opens a new one; a query cut off by the close of a reused connection is
//! sent once more on a fresh one.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;
use tpgate_core::dns::{frame, Frames};
use tracing::debug;

use super::error::UpstreamError;

/// A connection without queries in flight for this long is closed (servers close theirs
/// after a few seconds to minutes; this keeps ours from outliving them by much).
const IDLE: Duration = Duration::from_secs(30);
/// A reply that takes longer than this means the connection is stuck: it is dropped.
const REPLY_WAIT: Duration = Duration::from_secs(3);
/// Queries waiting to be written on one connection.
const QUEUE: usize = 64;

/// A query for the connection task, and where its reply goes.
struct Ask {
    /// The message, framed; its id is rewritten by the task.
    framed: Vec<u8>,
    reply: oneshot::Sender<Message>,
}

/// The shared connection of one upstream, opened on first use.
#[derive(Default)]
pub(crate) struct Pipeline {
    /// The live connection's queue; held while connecting, so concurrent queries share one
    /// new connection instead of each opening their own.
    current: Mutex<Option<mpsc::Sender<Ask>>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

fn closed() -> io::Error {
    UpstreamError::Closed.into()
}

impl Pipeline {
    /// Sends `query` (wire format) on the shared connection, opening one with `connect`
    /// when there is none; the reply has `query`'s id.
    pub(crate) async fn exchange<C, F, S>(&self, query: &[u8], connect: C) -> io::Result<Message>
    where
        C: Fn() -> F,
        F: Future<Output = io::Result<S>>,
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (Some(framed), [a, b, ..]) = (frame(query), query) else {
            return Err(UpstreamError::Unframeable.into());
        };
        let id = u16::from_be_bytes([*a, *b]);
        // A reused connection may be closed under us once; a fresh one failing is final.
        for _ in 0..3 {
            let (queue, fresh) = self.queue(&connect).await?;
            let (tx, rx) = oneshot::channel();
            let ask = Ask {
                framed: framed.clone(),
                reply: tx,
            };
            let outcome = if queue.send(ask).await.is_err() {
                Outcome::Closed
            } else {
                match tokio::time::timeout(REPLY_WAIT, rx).await {
                    Ok(Ok(reply)) => Outcome::Reply(reply),
                    Ok(Err(_)) => Outcome::Closed,
                    Err(_) => Outcome::Stuck,
                }
            };
            match outcome {
                Outcome::Reply(mut reply) => {
                    reply.set_id(id);
                    return Ok(reply);
                }
                Outcome::Closed => {
                    self.forget(&queue).await;
                    if fresh {
                        return Err(closed());
                    }
                    debug!("dns: reused connection closed; asking again on a new one");
                }
                Outcome::Stuck => {
                    self.forget(&queue).await;
                    return Err(UpstreamError::NoReply.into());
                }
            }
        }
        Err(closed())
    }

    /// The live connection's queue, and whether it was opened just now.
    async fn queue<C, F, S>(&self, connect: &C) -> io::Result<(mpsc::Sender<Ask>, bool)>
    where
        C: Fn() -> F,
        F: Future<Output = io::Result<S>>,
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut current = self.current.lock().await;
        if let Some(q) = current.as_ref().filter(|q| !q.is_closed()) {
            return Ok((q.clone(), false));
        }
        let stream = connect().await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(stream, rx));
        *current = Some(tx.clone());
        Ok((tx, true))
    }

    /// Drops `queue`'s connection if it is still the current one.
    async fn forget(&self, queue: &mpsc::Sender<Ask>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|q| q.same_channel(queue)) {
            *current = None;
        }
    }
}

enum Outcome {
    Reply(Message),
    /// The connection ended before the reply.
    Closed,
    /// No reply in [`REPLY_WAIT`].
    Stuck,
}

/// The connection task: writes queries with fresh ids, routes replies by id, and ends (so
/// its queue closes and waiting queries learn it) on a read or write error, when the
/// server closes, when idle for [`IDLE`], or when nobody holds its queue any more.
async fn run<S>(stream: S, mut queue: mpsc::Receiver<Ask>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut pending: HashMap<u16, oneshot::Sender<Message>> = HashMap::new();
    let mut frames = Frames::default();
    let mut buf = vec![0u8; 4096];
    let mut idle_at = Instant::now() + IDLE;
    loop {
        tokio::select! {
            ask = queue.recv() => {
                let Some(mut ask) = ask else { break };
                let mut id: u16 = rand::random();
                while pending.contains_key(&id) {
                    id = rand::random();
                }
                ask.framed[2..4].copy_from_slice(&id.to_be_bytes());
                let written = async {
                    wr.write_all(&ask.framed).await?;
                    wr.flush().await
                };
                if let Err(e) = written.await {
                    debug!("dns stream write: {e}");
                    break;
                }
                pending.insert(id, ask.reply);
            }
            n = rd.read(&mut buf) => match n {
                Ok(0) => break,
                Ok(n) => {
                    frames.push(&buf[..n]);
                    while let Some(bytes) = frames.next_message() {
                        // A reply that does not parse cannot be matched: its query times out.
                        let Ok(reply) = Message::from_vec(&bytes) else { continue };
                        if let Some(tx) = pending.remove(&reply.id()) {
                            let _ = tx.send(reply);
                        }
                    }
                    idle_at = Instant::now() + IDLE;
                }
                Err(e) => {
                    debug!("dns stream read: {e}");
                    break;
                }
            },
            () = tokio::time::sleep_until(idle_at), if pending.is_empty() => break,
        }
        // Queries that gave up waiting no longer hold the connection open.
        pending.retain(|_, tx| !tx.is_closed());
        if !pending.is_empty() {
            idle_at = Instant::now() + IDLE;
        }
    }
}
