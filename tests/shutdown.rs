//! OPS-7: SIGTERM stops accepting, answers `421 4.3.2` to sessions between
//! commands, lets a message in DATA finish and answers it, then exits 0
//! within the bound; nothing answered `250` is lost, under load too.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Gateway;

#[test]
fn sigterm_drains_sessions_and_keeps_every_message() {
    let dir = common::temp_dir("shutdown");
    let port = common::free_port();
    std::fs::write(
        dir.join("sealgate.toml"),
        common::config(port, 2, "shutdown_timeout = \"20s\""),
    )
    .unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    // A client in the middle of DATA, and one idle between commands.
    let mut busy = common::connect(gw.addr);
    busy.reply();
    busy.cmd("EHLO busy.test");
    busy.cmd("MAIL FROM:<a@client.test>");
    busy.cmd("RCPT TO:<u@example.com>");
    assert!(busy.cmd("DATA").starts_with("354"));
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n");
    let mut idle = common::connect(gw.addr);
    idle.reply();
    idle.cmd("EHLO idle.test");

    let started = Instant::now();
    gw.terminate();
    gw.wait_for_log("draining", Duration::from_secs(10));
    assert_eq!(
        idle.reply(),
        "421 4.3.2 Service shutting down, closing connection\r\n"
    );
    // The message in DATA finishes and is answered, then the session ends.
    busy.send(b"second half\r\n.\r\n");
    let queued = busy.reply();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert_eq!(
        busy.reply(),
        "421 4.3.2 Service shutting down, closing connection\r\n"
    );
    // No new connections.
    assert!(
        std::net::TcpStream::connect(gw.addr).is_err(),
        "the listeners are closed"
    );
    let (status, log) = gw.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "well within the bound"
    );
    assert!(log.contains("sealgate stopped"));

    // The message is in the spool.
    let id = queued.trim().rsplit(' ').next().unwrap().to_string();
    let spooled = common::spooled(&dir.join("spool"));
    assert!(spooled.iter().any(|m| m.id == id), "{id} kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_under_load_loses_nothing() {
    let dir = common::temp_dir("shutdown-load");
    let port = common::free_port();
    std::fs::write(dir.join("sealgate.toml"), common::config(port, 2, "")).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let acks: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (acks, stop, addr) = (acks.clone(), stop.clone(), gw.addr);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(s) = std::net::TcpStream::connect(addr) else {
                        return;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                    let mut c = common::Client::new(s);
                    if !c.try_reply().unwrap_or_default().starts_with("220")
                        || !c.try_cmd("EHLO load.test").starts_with("250")
                    {
                        return;
                    }
                    for _ in 0..3 {
                        n += 1;
                        let subject = format!("load-{w}-{n}");
                        if !c.try_cmd("MAIL FROM:<l@load.test>").starts_with("250")
                            || !c.try_cmd("RCPT TO:<u@example.com>").starts_with("250")
                            || !c.try_cmd("DATA").starts_with("354")
                        {
                            return;
                        }
                        let reply = c.try_cmd(&format!("Subject: {subject}\r\n\r\nbody\r\n."));
                        match reply.strip_prefix("250 2.0.0 Ok: queued as ") {
                            Some(id) => {
                                acks.lock().unwrap().insert(subject, id.trim().to_string());
                            }
                            None => return,
                        }
                    }
                    c.try_cmd("QUIT");
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.lock().unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "load stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.terminate();
    let (status, log) = gw.wait_exit(Duration::from_secs(45));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(status.success(), "{log}");
    let ids: Vec<String> = common::spooled(&dir.join("spool"))
        .into_iter()
        .map(|m| m.id)
        .collect();
    let acks = acks.lock().unwrap();
    for (subject, id) in acks.iter() {
        assert!(
            ids.contains(id),
            "{subject} ({id}) answered 250 but not in the spool"
        );
    }
    eprintln!(
        "{} messages answered 250 before and during the stop; all kept",
        acks.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
