//! A fault-injecting TCP relay: put it between one client and one server to
//! cut exactly that link (every open connection is shut, new ones are
//! accepted and dropped at once) and restore it later.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    cut: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

pub struct Relay {
    pub port: u16,
    state: Arc<State>,
}

impl Relay {
    /// Relays 127.0.0.1:`port` to `target` (host:port).
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let port = listener.local_addr().expect("relay addr").port();
        let state = Arc::new(State::default());
        let (st, target) = (state.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                if st.cut.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    let mut conns = st.conns.lock().unwrap_or_else(|e| e.into_inner());
                    conns.push(c2);
                    conns.push(s2);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Self { port, state }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts the link: open connections are shut, new ones dropped.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::Release);
        let conns =
            std::mem::take(&mut *self.state.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::Release);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
