//! Session threads.
//!
//! Each thread runs a single-threaded tokio runtime with an event loop of
//! its own, and keeps every session it is given for the session's whole
//! life: the client's socket and the backend's are both polled by the
//! thread that runs the session, so a statement's round trip wakes one
//! thread and no task moves between threads. This is HAProxy's
//! `nbthread` model. Under sysbench on a machine whose cores the clients
//! and the server share, tokio's work-stealing scheduler left a core idle
//! about a tenth of the time (one worker holds the event loop while the
//! other sleeps, not woken for ready sockets); these threads do not (see
//! the README's Performance section).
//!
//! New sessions go to the thread with the fewest.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A set of session threads.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    sessions: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

/// Counts a session on its thread until dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `n` threads (at least one), named `zerodb-worker-<i>`.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stop_rx) = oneshot::channel::<()>();
            let (stopped_tx, stopped) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("zerodb-worker-{i}"))
                .spawn(move || {
                    // Runs the thread's sessions until told to stop; the
                    // sessions still open then are dropped with the runtime.
                    let _ = rt.block_on(stop_rx);
                    drop(rt);
                    let _ = stopped_tx.send(());
                })?;
            threads.push(Worker {
                handle,
                sessions: Arc::default(),
                stop: Some(stop),
                stopped: Some(stopped),
            });
        }
        Ok(Self { threads })
    }

    /// How many threads there are.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether there are no threads (never: [`Workers::start`] starts at
    /// least one).
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Sessions each thread runs now.
    pub fn sessions(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|w| w.sessions.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `session` on the thread with the fewest sessions, with
    /// `stream` (accepted on any runtime) moved to that thread's event
    /// loop.
    pub fn spawn<F, Fut>(&self, stream: TcpStream, session: F) -> std::io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(w) = self
            .threads
            .iter()
            .min_by_key(|w| w.sessions.load(Ordering::Relaxed))
        else {
            return Err(std::io::Error::other("no session threads"));
        };
        let stream = stream.into_std()?;
        w.sessions.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(w.sessions.clone());
        w.handle.spawn(async move {
            let _counted = counted;
            match TcpStream::from_std(stream) {
                Ok(s) => session(s).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot move a client connection to its thread")
                }
            }
        });
        Ok(())
    }

    /// Stops every thread (sessions still open are cut) and waits until
    /// they have let go of their runtimes.
    pub async fn stop(mut self) {
        for w in &mut self.threads {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
        for w in &mut self.threads {
            if let Some(r) = w.stopped.take() {
                let _ = r.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Each session runs on a worker thread, new ones go where there are
    /// fewest, and its socket works there.
    #[tokio::test]
    async fn sessions_run_on_the_least_loaded_thread_with_their_socket() {
        let workers = Workers::start(2).expect("threads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut clients = Vec::new();
        let (names_tx, mut names_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let client = TcpStream::connect(addr).await.expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            let names = names_tx.clone();
            workers
                .spawn(stream, move |mut s| async move {
                    let name = std::thread::current().name().map(str::to_string);
                    let _ = names.send(name);
                    let mut b = [0u8; 4];
                    if s.read_exact(&mut b).await.is_ok() {
                        let _ = s.write_all(&b).await;
                    }
                    // Stays open until the client goes.
                    let _ = s.read(&mut b).await;
                })
                .expect("spawn");
            clients.push(client);
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(names_rx.recv().await.flatten().unwrap_or_default());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "zerodb-worker-0",
                "zerodb-worker-0",
                "zerodb-worker-1",
                "zerodb-worker-1"
            ]
        );
        assert_eq!(workers.sessions(), [2, 2]);
        for c in &mut clients {
            c.write_all(b"ping").await.expect("write");
            let mut b = [0u8; 4];
            c.read_exact(&mut b).await.expect("echo");
            assert_eq!(&b, b"ping");
        }
        drop(clients.pop());
        drop(clients.pop());
        let started = std::time::Instant::now();
        while workers.sessions().iter().sum::<usize>() > 2 {
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        workers.stop().await;
    }
}
