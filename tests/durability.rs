//! IN-6: a message answered `250` survives a crash. Clients send messages
//! in a loop; the gateway is SIGKILLed mid-load (three times), restarted
//! on the same spool, and every acknowledged message must be there,
//! complete, while no partial file is ever loaded as a message.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::Gateway;

/// (subject → queue id) of every message the gateway acknowledged.
type Acks = Arc<(Mutex<HashMap<String, String>>, Condvar)>;

fn body(subject: &str, size: usize) -> String {
    let mut b = format!("Subject: {subject}\r\n\r\n");
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    while b.len() < size {
        b.push_str(line);
    }
    b.push_str(&format!("END {subject} {size}\r\n"));
    b
}

/// One client: messages back to back until the connection breaks.
fn sender(
    addr: std::net::SocketAddr,
    worker: usize,
    round: usize,
    acks: Acks,
    stop: Arc<AtomicBool>,
) {
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = std::net::TcpStream::connect(addr) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut c = common::Client::new(stream);
        if !c.try_reply().unwrap_or_default().starts_with("220")
            || !c.try_cmd("EHLO load.test").starts_with("250")
        {
            return;
        }
        for _ in 0..5 {
            seq += 1;
            let subject = format!("dur-{round}-{worker}-{seq}");
            // Sizes from 1 KB to ~256 KB, so some kills land mid-write.
            let size = 1024 << (seq % 9);
            if !c.try_cmd("MAIL FROM:<load@client.test>").starts_with("250")
                || !c.try_cmd("RCPT TO:<sink@example.com>").starts_with("250")
                || !c.try_cmd("DATA").starts_with("354")
            {
                return;
            }
            let mut data = body(&subject, size);
            data.push('.');
            let reply = c.try_cmd(&data);
            let Some(id) = reply.strip_prefix("250 2.0.0 Ok: queued as ") else {
                return;
            };
            let (m, cv) = &*acks;
            m.lock().unwrap().insert(subject, id.trim().to_string());
            cv.notify_all();
        }
        let _ = c.try_cmd("QUIT");
    }
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    let mut gw = Gateway::start("durability", 2, "");
    let (dir, port) = (gw.dir.clone(), gw.port());
    let acks: Acks = Arc::default();
    let mut total_partial = 0;
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (acks, stop, addr) = (acks.clone(), stop.clone(), gw.addr);
                std::thread::spawn(move || sender(addr, w, round, acks, stop))
            })
            .collect();
        // Kill once this round has added 40 acknowledgements.
        {
            let (m, cv) = &*acks;
            let target = m.lock().unwrap().len() + 40;
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut g = m.lock().unwrap();
            while g.len() < target {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "load stalled at {} acks:\n{}",
                    g.len(),
                    gw.log()
                );
                g = cv.wait_timeout(g, left).unwrap().0;
            }
        }
        let _ = gw.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        gw = Gateway::start_in(dir.clone(), port);
        let log = gw.log();
        let line = log
            .lines()
            .find(|l| l.contains("recovered"))
            .expect("recovery line");
        assert!(line.contains("damaged 0"), "{line}");
        // Journals whose last write was torn by the kill.
        let partial: usize = line
            .split("cut ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        total_partial += partial;

        // Every acknowledged message is in the spool, complete.
        let spooled = gw.spooled();
        let by_id: HashMap<&str, &sealgate::spool::Spooled> =
            spooled.iter().map(|m| (m.id.as_str(), m)).collect();
        let acked = acks.0.lock().unwrap().clone();
        for (subject, id) in &acked {
            let m = by_id
                .get(id.as_str())
                .unwrap_or_else(|| panic!("acknowledged {subject} ({id}) lost"));
            let text = String::from_utf8_lossy(&m.message);
            assert!(
                text.contains(&format!("Subject: {subject}\r\n")),
                "{id} holds another message"
            );
            let size = text
                .rsplit("END ")
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .trim()
                .parse::<usize>()
                .unwrap();
            assert_eq!(
                body(subject, size).len(),
                text.split_once("Subject: ")
                    .map(|(_, b)| b.len() + 9)
                    .unwrap(),
                "{id} incomplete"
            );
        }
        // Nothing that was not acknowledged is loaded unless it is whole
        // (the spool parser checks the recorded size against the data).
        assert!(spooled.len() >= acked.len());
        eprintln!(
            "round {round}: {} acknowledged so far, {} in spool, {partial} journal(s) with a torn end cut at restart",
            acked.len(),
            spooled.len()
        );
    }
    eprintln!("torn journal ends cut over all restarts: {total_partial}");
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
