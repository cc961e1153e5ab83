//! Code written against `Read + Write` runs unchanged on green sockets:
//! `tungstenite`, a blocking WebSocket crate from crates.io generic over
//! its stream, serves and drives a hundred WebSocket sessions at once on
//! one thread. Loopback only.

mod util;

use greenlet_hub::{Error, Event, StreamServer, TcpStream, spawn};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tungstenite::Message;

fn failed(e: impl std::fmt::Display) -> Error {
    Error::failed(std::io::Error::other(e.to_string()))
}

const CLIENTS: usize = 100;
const ROUNDS: usize = 5;

#[test]
fn a_hundred_websocket_sessions_in_one_thread() {
    let open = Rc::new(Cell::new(0usize));
    let most_open = Rc::new(Cell::new(0usize));
    let (o, m) = (open.clone(), most_open.clone());
    // The server: tungstenite's blocking `accept` over a green TcpStream.
    let server = StreamServer::bind("127.0.0.1:0", move |conn, _peer| {
        let mut ws = tungstenite::accept(conn).map_err(failed)?;
        o.set(o.get() + 1);
        m.set(m.get().max(o.get()));
        let result = loop {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    if let Err(e) = ws.send(Message::text(t.to_uppercase())) {
                        break Err(failed(e));
                    }
                }
                // A Close is answered by tungstenite on the next read,
                // which then reports the end.
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => break Ok(()),
                Err(e) => break Err(failed(e)),
            }
        };
        o.set(o.get() - 1);
        result
    })
    .unwrap();
    server.start().unwrap();
    let url = format!("ws://{}/echo", server.local_addr());

    // Every client, its handshake done, waits until all are: the sessions
    // are all open at once by construction, not by timing. (Served one at a
    // time, the first would wait forever: a hang, no time-free failure.)
    let all_open = Event::new();
    let opened = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = url.clone();
            let (all_open, opened) = (all_open.clone(), opened.clone());
            spawn(move || {
                // tungstenite's blocking `client` over a green TcpStream.
                let stream = TcpStream::connect(server_addr(&url))?;
                let (mut ws, response) =
                    tungstenite::client(url.as_str(), stream).map_err(failed)?;
                assert_eq!(response.status(), 101);
                opened.set(opened.get() + 1);
                if opened.get() == CLIENTS {
                    all_open.set();
                }
                all_open.wait(None)?;
                for round in 0..ROUNDS {
                    ws.send(Message::text(format!("hello {i}.{round}")))
                        .map_err(failed)?;
                    let reply = ws.read().map_err(failed)?;
                    assert_eq!(reply, Message::text(format!("HELLO {i}.{round}")));
                }
                ws.close(None).map_err(failed)?;
                // Drive the closing handshake to its end.
                loop {
                    match ws.read() {
                        Ok(_) => {}
                        Err(tungstenite::Error::ConnectionClosed) => return Ok(()),
                        Err(e) => return Err(failed(e)),
                    }
                }
            })
        })
        .collect();
    for c in &clients {
        c.get(None).unwrap();
    }
    let took = start.elapsed();
    server.stop(Duration::from_secs(5)).unwrap();
    // The server had every session open at once: each server side counts
    // itself open before its client's handshake can complete, and none
    // closes before all clients passed the barrier.
    assert_eq!(
        most_open.get(),
        CLIENTS,
        "sessions overlapped: at most {} open at once",
        most_open.get()
    );
    // No bound on `took` (printed for the curious): the overlap above is the
    // evidence that the sessions ran concurrently.
    eprintln!("{CLIENTS} sessions in {took:?}");
}

fn server_addr(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
