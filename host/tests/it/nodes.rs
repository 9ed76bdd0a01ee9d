//! Nodes, heartbeats and failover through the real `sluice serve` (issue 18): a node
//! killed with SIGKILL and restarted delivers its leased work at once, not after its
//! leases run out; on PostgreSQL the survivors of a killed node deliver its work within
//! seconds, lose nothing, and send twice at most what was in flight at the kill; one
//! node leads, and another takes over when it dies; `GET /admin/v1/nodes` shows it all.

use crate::support::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The requirement: a dead node's work is delivered within this of the restart or kill.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(10);

fn one_relay(port: u16, relay_extra: &str) -> String {
    format!(
        "{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), relay_extra),
        tenant_table("t", &["*"])
    )
}

/// Submits one message per subject; returns (id, subject).
fn submit_all(s: &Sluice, key: &str, subjects: &[String]) -> Vec<(String, String)> {
    subjects
        .iter()
        .map(|sub| {
            (
                s.submit(key, &simple("a@example.com", "b@example.net", sub)),
                sub.clone(),
            )
        })
        .collect()
}

/// Per subject, how many copies the sink holds.
fn copies(sink: &Sink) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for m in sink.messages() {
        if let Some(s) = header(&m, "subject") {
            *n.entry(s).or_insert(0) += 1;
        }
    }
    n
}

fn nodes(s: &Sluice) -> Value {
    let r = s.admin("GET", "/admin/v1/nodes", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn node<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["id"] == id))
        .unwrap_or_else(|| panic!("no node {id:?} in {v}"))
}

/// Issue 18: a restarted node waited a whole `lease_secs` (here five minutes) for its
/// own leases, since it came back under a new node id. Now its id is kept beside the
/// store, and it takes its leases back as it starts.
#[test]
fn a_node_killed_and_restarted_delivers_its_leased_work_within_10_s() {
    let port = free_port();
    let tables = one_relay(port, "connection_limit = 4");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        // Leases far longer than the test: only taking them back can deliver in time.
        delivery: "lease_secs = 300\nsmtp_timeout_secs = 120\nmax_in_flight = 4",
        ..Default::default()
    });
    // Replies to DATA after 30 s: everything sent is in flight or waiting at the kill.
    let stuck = Sink::start(setup.root(), port, &["-w", "30"]);
    let mut s = setup.start();
    let key = s.new_key("t");
    let subjects: Vec<String> = (0..20).map(|i| format!("restart {i}")).collect();
    let sent = submit_all(&s, &key, &subjects);
    let id = s.request("GET", "/healthz", None, None, b"").json()["node"]
        .as_str()
        .expect("node id")
        .to_owned();
    // Four transactions stuck at DATA (the relay's and the node's limit), each holding
    // its recipient's lease; the rest wait in the store or in memory.
    let held = wait_for("the node to hold leases", || {
        let v = nodes(&s);
        let n = node(&v, &id);
        let held = n["leases_held"].as_u64().unwrap_or(0);
        if held >= 4 && n["state"] == "alive" && n["leader"] == true && v["leader"] == id.as_str() {
            Ok(held)
        } else {
            Err(v.to_string())
        }
    });
    s.guard.kill();
    // What the stuck relay holds was in flight at the kill (received, not yet answered):
    // the only messages that may arrive twice.
    let in_flight: HashSet<String> = stuck.subjects();
    stuck.stop();

    let after = setup.root().join("after");
    let sink = Sink::start(&after, port, &[]);
    let s = setup.start();
    let restarted = Instant::now();
    let want: HashSet<String> = subjects.iter().cloned().collect();
    wait_for_within(
        TAKEOVER_DEADLINE,
        "every leased message delivered after the restart",
        || {
            let seen = sink.subjects();
            let missing = want.difference(&seen).count();
            if missing == 0 {
                Ok(())
            } else {
                Err(format!("{missing} of 20 missing\n{}", s.log()))
            }
        },
    );
    eprintln!(
        "restart test: all 20 delivered {:?} after the restarted node answered",
        restarted.elapsed()
    );
    assert_eq!(
        s.request("GET", "/healthz", None, None, b"").json()["node"],
        id.as_str(),
        "the node id is stable across restarts"
    );
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    let taken_back: u64 = log
        .split_once(&format!("(node {id}, "))
        .and_then(|(_, rest)| rest.split_once(' '))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no start line in\n{log}"));
    assert!(
        taken_back >= held,
        "{held} leases held at the kill, {taken_back} taken back at the restart"
    );
    for (mid, _) in &sent {
        s.wait_state(&key, mid, "delivered");
    }
    // Sent once by the restarted node, and a second time only if in flight at the kill.
    let once: Vec<_> = copies(&sink).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(once.is_empty(), "{once:?}");
    assert!(in_flight.len() as u64 <= held, "{in_flight:?}");
    eprintln!(
        "restart test: {held} leases held at the kill, {} sent twice (in flight at the kill)",
        in_flight.len()
    );
}

/// A second process on the same SQLite store would share the first one's node id and
/// its leases: it is refused before it opens the store, and the first goes on.
#[test]
fn a_second_process_on_one_sqlite_store_is_refused() {
    let port = free_port();
    let tables = one_relay(port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    // A pipeline that passes the checks (its admin token set): only the store is taken.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--pipeline"])
        .arg(&setup.pipeline)
        .env("SLUICE_E2E_ADMIN_TOKEN", &setup.admin_token)
        .current_dir(setup.root())
        .output()
        .expect("run sluice serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another sluice serve uses the store"), "{err}");
    let key = s.new_key("t");
    let id = s.submit(
        &key,
        &simple("a@example.com", "b@example.net", "still served"),
    );
    s.wait_state(&key, &id, "delivered");
    assert_eq!(sink.with_subject("still served").len(), 1);
}

// ---- PostgreSQL: several nodes ----

/// A node's pipeline on the shared database: its own port, directory and admin token,
/// its node id from the host name and `suffix` (as several nodes on one machine are
/// told apart), a heartbeat every `beat_ms`.
fn pg_node(db: &PgDb, tables: &str, suffix: &str, delivery: &str, beat_ms: u64) -> Setup {
    let server = format!("node_suffix = \"{suffix}\"\nheartbeat_ms = {beat_ms}");
    let setup = Setup::new(PipelineParts {
        tables,
        delivery,
        server: &server,
        ..Default::default()
    });
    setup.use_store(&db.url());
    setup
}

/// Issue 18: a dead PostgreSQL node's work waited for its leases to run out. Now: three
/// nodes under load, the leader killed with SIGKILL; the survivors deliver its work
/// within 10 s of the kill, nothing is lost, the only second copies are of messages the
/// killed node had in flight (at most its `max_in_flight`), and a survivor leads. Leases
/// last five minutes: only the takeover can deliver the killed node's leased work in time.
#[test]
fn postgres_a_killed_node_of_three_is_taken_over_by_the_survivors_within_10_s() {
    let db = PgDb::new("sluice_nodes_kill");
    let port = free_port();
    let tables = one_relay(port, "connection_limit = 16");
    let delivery = "lease_secs = 300\nmax_in_flight = 16";
    let setups: Vec<Setup> = (1..=3)
        .map(|i| pg_node(&db, &tables, &format!("n{i}"), delivery, 500))
        .collect();
    // 1 s per DATA: a node always has transactions in flight and work waiting.
    let sink = Sink::start(setups[0].root(), port, &["-w", "1"]);
    let mut nodes_up: Vec<Sluice> = setups.iter().map(Setup::start).collect();
    let key = nodes_up[0].new_key("t");

    let ids: Vec<String> = nodes_up
        .iter()
        .map(|s| {
            s.request("GET", "/healthz", None, None, b"").json()["node"]
                .as_str()
                .expect("node id")
                .to_owned()
        })
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3, "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| id.ends_with("-n1") || id.ends_with("-n2") || id.ends_with("-n3"))
    );
    let leader = wait_for("one leader among three live nodes", || {
        let v = nodes(&nodes_up[0]);
        let alive = v["nodes"]
            .as_array()
            .map_or(0, |ns| ns.iter().filter(|n| n["state"] == "alive").count());
        let leaders: Vec<String> = v["nodes"]
            .as_array()
            .map(|ns| {
                ns.iter()
                    .filter(|n| n["leader"] == true)
                    .filter_map(|n| n["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if alive == 3 && leaders.len() == 1 && v["leader"] == leaders[0].as_str() {
            Ok(leaders[0].clone())
        } else {
            Err(v.to_string())
        }
    });
    let victim = ids
        .iter()
        .position(|id| *id == leader)
        .expect("leader is a node");

    // Load: 40 messages through each node at once (each accepted leased to its node).
    let per_node = 40;
    let sent: Vec<Vec<(String, String)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes_up
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = key.clone();
                scope.spawn(move || {
                    let subjects: Vec<String> =
                        (0..per_node).map(|j| format!("node{i} msg{j}")).collect();
                    submit_all(s, &key, &subjects)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let held = node(&nodes(&nodes_up[0]), &leader)["leases_held"]
        .as_u64()
        .unwrap_or(0);
    let at_kill = copies(&sink);
    let victims: HashSet<String> = sent[victim].iter().map(|(_, s)| s.clone()).collect();
    let victim_done = victims.iter().filter(|s| at_kill.contains_key(*s)).count();
    assert!(
        held > 0 && victim_done < per_node,
        "the node was not under load at the kill ({held} leases held, {victim_done} delivered)"
    );
    nodes_up[victim].guard.kill();
    let killed = Instant::now();
    let survivor = nodes_up
        .iter()
        .enumerate()
        .find(|(i, _)| *i != victim)
        .unwrap()
        .1;

    wait_for_within(
        TAKEOVER_DEADLINE,
        "the killed node's messages delivered by the survivors",
        || {
            let seen = sink.subjects();
            let missing = victims.difference(&seen).count();
            if missing == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{missing} of {per_node} missing\n{}",
                    survivor.log()
                ))
            }
        },
    );
    let took = killed.elapsed();
    let all: HashSet<String> = sent.iter().flatten().map(|(_, s)| s.clone()).collect();
    wait_for("every message of every node at the sink", || {
        let missing = all.difference(&sink.subjects()).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} missing"))
        }
    });
    for (mid, _) in sent.iter().flatten() {
        survivor.wait_state(&key, mid, "delivered");
    }
    // Give a late second copy the time to arrive before counting.
    let settle_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle_until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = copies(&sink);
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "kill test: {held} leases held by {leader} at the kill, {victim_done} of its {per_node} \
         delivered before it, the rest within {took:?}; {} sent twice: {twice:?}",
        twice.len()
    );
    for (subject, n) in &twice {
        assert!(
            victims.contains(*subject) && **n == 2,
            "{subject:?} arrived {n} times; only the killed node's in-flight ones may come twice"
        );
    }
    assert!(
        twice.len() <= 16,
        "{} sent twice, more than the killed node's max_in_flight (16)",
        twice.len()
    );

    // The killed node shows dead with nothing held; a survivor leads.
    let v = wait_for("the killed node dead and a survivor leading", || {
        let v = nodes(survivor);
        let dead = node(&v, &leader);
        if dead["state"] == "dead"
            && dead["leases_held"] == 0
            && v["leader"].as_str().is_some_and(|l| l != leader)
        {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    let new_leader = v["leader"].as_str().unwrap().to_owned();
    assert!(ids.contains(&new_leader) && new_leader != leader, "{v}");
    assert_eq!(v["heartbeat_ms"], 500);
    drop(nodes_up.remove(victim));
}

/// Issue 18's last gap: a process stopped (SIGSTOP, a paused VM) for longer than the
/// dead-after time while a newer process takes its node id over. The newer one takes
/// back the id's leases and delivers them; the old one, woken, must send none of the
/// work it still holds in memory under the shared id. Only the transactions it had
/// under way when it stopped (at most the relay's connections) may arrive twice.
#[test]
fn postgres_a_stopped_process_whose_id_was_taken_over_sends_nothing_when_it_wakes() {
    let db = PgDb::new("sluice_nodes_stall");
    let port = free_port();
    let connections = 2;
    let tables = one_relay(port, &format!("connection_limit = {connections}"));
    // Leases far longer than the test: only the takeover moves the work.
    let delivery = "lease_secs = 300\nmax_in_flight = 8";
    let first = pg_node(&db, &tables, "stall", delivery, 200);
    let second = pg_node(&db, &tables, "stall", delivery, 200);
    // 1 s per DATA: the first process has transactions under way and work waiting.
    let sink = Sink::start(first.root(), port, &["-w", "1"]);
    let mut old = first.start();
    let key = old.new_key("t");
    let subjects: Vec<String> = (0..12).map(|i| format!("stall-{i}")).collect();
    let sent = submit_all(&old, &key, &subjects);
    wait_for("the first process to be sending", || {
        if sink.messages().is_empty() {
            Err(old.log())
        } else {
            Ok(())
        }
    });
    old.guard.signal("STOP");

    // The newer process waits out the stopped one's heartbeat, joins under the same id
    // and delivers everything.
    let new = second.start();
    for (id, _) in &sent {
        new.wait_state(&key, id, "delivered");
    }
    // What the relay had before the old process woke, for the failure message.
    let before_wake = copies(&sink);

    old.guard.signal("CONT");
    let status = old.guard.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(70), "{}", old.log());

    let after = copies(&sink);
    for subject in &subjects {
        assert!(
            after.get(subject).is_some_and(|&n| n >= 1),
            "{subject} lost: {after:?}"
        );
    }
    let twice: usize = after.values().map(|n| n - 1).sum();
    assert!(
        twice <= connections,
        "{twice} second copies; only the {connections} transactions under way at the stop \
         may be sent twice (before the old process woke: {before_wake:?}, after: {after:?})\n{}",
        old.log()
    );
}
