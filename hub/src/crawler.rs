//! The tour's crawler: three green HTTP GETs started together against a
//! local HTTP server whose routes answer after different delays, so the
//! whole crawl takes about as long as the slowest page, not the sum.
//!
//! Both sides are plain blocking-looking code over [`TcpStream`]
//! (`write_all`, `read_to_end`) on one thread: the server is a
//! [`StreamServer`] on `127.0.0.1`, port 0, and each GET is a task.

use crate::error::Error;
use crate::hub::sleep;
use crate::net::TcpStream;
use crate::server::StreamServer;
use crate::task::{Task, spawn};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The server's routes and how long each takes to answer, in the order the
/// crawler starts them.
pub const ROUTES: [(&str, Duration); 3] = [
    ("/slow", Duration::from_millis(300)),
    ("/fast", Duration::from_millis(100)),
    ("/medium", Duration::from_millis(200)),
];

/// What a crawl measured.
#[derive(Clone, Debug)]
pub struct Crawl {
    /// From starting the GETs to the last answer.
    pub total: Duration,
    /// The server's delays added up: what the crawl would take one page
    /// after another.
    pub sum_of_delays: Duration,
    /// The paths, in the order their answers came.
    pub finished: Vec<String>,
    /// How many requests had reached the server when it sent its first
    /// answer: all of them when the GETs run at once (one, if they ran
    /// one after another).
    pub arrived_before_first_answer: usize,
}

/// Starts the local server, runs the three GETs of [`ROUTES`] at once and
/// prints (through `say`) each as it starts and as it finishes, then the
/// total, which is about the slowest delay rather than their sum.
///
/// # Errors
///
/// Those of the sockets and the tasks (none in practice on loopback).
///
/// # Examples
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
///
/// let lines = Rc::new(RefCell::new(Vec::new()));
/// let out = lines.clone();
/// let crawl = greenlet_hub::crawler::crawler(move |line| out.borrow_mut().push(line))?;
/// // All three were under way at once: each request reached the server
/// // before it answered the first.
/// assert_eq!(crawl.arrived_before_first_answer, 3);
/// assert_eq!(crawl.finished, ["/fast", "/medium", "/slow"]);
/// assert!(lines.borrow()[1].starts_with("GET /slow started"));
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn crawler(say: impl Fn(String) + Clone + 'static) -> Result<Crawl, Error> {
    let arrived = Rc::new(Cell::new(0));
    let at_first_answer = Rc::new(Cell::new(None));
    let server = StreamServer::bind("127.0.0.1:0", {
        let (arrived, at_first_answer) = (arrived.clone(), at_first_answer.clone());
        move |conn, _peer| serve_page(conn, &arrived, &at_first_answer)
    })?;
    server.start()?;
    let addr = server.local_addr();
    say(format!("serving {} pages on http://{addr}", ROUTES.len()));

    let start = Instant::now();
    let gets: Vec<Task<(String, Duration)>> = ROUTES
        .iter()
        .map(|&(path, _)| {
            let say = say.clone();
            say(format!("GET {path} started"));
            spawn(move || {
                let (status, body) = http_get(addr, path)?;
                let took = start.elapsed();
                say(format!(
                    "GET {path} finished after {} ms: {status}, {} bytes: {body:?}",
                    took.as_millis(),
                    body.len(),
                ));
                Ok((path.to_owned(), took))
            })
        })
        .collect();
    let mut done = Vec::with_capacity(gets.len());
    for get in &gets {
        done.push(get.get(None)?);
    }
    let total = start.elapsed();
    server.stop(Duration::from_secs(1))?;

    done.sort_by_key(|(_, took)| *took);
    let sum_of_delays = ROUTES.iter().map(|(_, d)| *d).sum();
    say(format!(
        "{} pages in {} ms, about the slowest alone; one after another they would take {} ms",
        done.len(),
        total.as_millis(),
        Duration::as_millis(&sum_of_delays),
    ));
    Ok(Crawl {
        total,
        sum_of_delays,
        finished: done.into_iter().map(|(path, _)| path).collect(),
        arrived_before_first_answer: at_first_answer.get().unwrap_or(0),
    })
}

/// The server's handler: read the request head (counting it in `arrived`),
/// wait the route's delay, answer (the first answer notes in
/// `at_first_answer` how many requests had arrived) and close.
fn serve_page(
    mut conn: TcpStream,
    arrived: &Cell<usize>,
    at_first_answer: &Cell<Option<usize>>,
) -> Result<(), Error> {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(()); // the client left
        }
        head.extend_from_slice(&buf[..n]);
    }
    arrived.set(arrived.get() + 1);
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let response = match ROUTES.iter().find(|(p, _)| *p == path) {
        Some((_, delay)) => {
            sleep(*delay)?;
            let body = format!("the {} page", &path[1..]);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    if at_first_answer.get().is_none() {
        at_first_answer.set(Some(arrived.get()));
    }
    conn.write_all(response.as_bytes())?;
    Ok(())
}

/// A minimal HTTP/1.1 GET: the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(String, String), Error> {
    let mut conn = TcpStream::connect(addr)?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| {
        Error::from(io::Error::new(
            io::ErrorKind::InvalidData,
            "no end of the response head",
        ))
    })?;
    let status = head.lines().next().unwrap_or_default();
    let status = status.split_once(' ').map_or(status, |(_, s)| s);
    Ok((status.to_owned(), body.to_owned()))
}
