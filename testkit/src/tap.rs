//! A recording TCP relay: put it between real clients and a real server
//! and it keeps every connection's bytes, in order, with the direction
//! they went. The fuzz seed corpus is captured this way, so fuzzing starts
//! from what real drivers and servers say.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One chunk of a conversation: who sent it and what was read at once.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// The client sent it (otherwise the server did).
    pub from_client: bool,
    pub bytes: Vec<u8>,
}

type Conversations = Arc<Mutex<Vec<Arc<Mutex<Vec<Chunk>>>>>>;

pub struct Tap {
    pub port: u16,
    conversations: Conversations,
}

impl Tap {
    /// Relays 127.0.0.1:`port` to `target` (host:port), recording.
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("tap bind");
        let port = listener.local_addr().expect("tap addr").port();
        let conversations: Conversations = Arc::default();
        let (all, target) = (conversations.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let log: Arc<Mutex<Vec<Chunk>>> = Arc::default();
                all.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(log.clone());
                record(&client, &server, true, log.clone());
                record(&server, &client, false, log);
            }
        });
        Self {
            port,
            conversations,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every connection so far, each as its chunks in the order read.
    pub fn conversations(&self) -> Vec<Vec<Chunk>> {
        self.conversations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }
}

/// Copies `from` to `to`, appending what it reads to `log`; the lock is
/// held across the write, so chunks are logged in the order delivered.
fn record(from: &TcpStream, to: &TcpStream, from_client: bool, log: Arc<Mutex<Vec<Chunk>>>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push(Chunk {
                from_client,
                bytes: buf[..n].to_vec(),
            });
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
