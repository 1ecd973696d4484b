//! Protocol tests against a fake guest agent on a Unix socket pair.

use super::*;
use std::io::{BufRead, BufReader};
use std::thread;

/// Runs `script` as the agent's side of a socket pair.
fn fake_agent(script: impl FnOnce(BufReader<UnixStream>, UnixStream) + Send + 'static) -> Agent {
    let (ours, theirs) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let reader = BufReader::new(theirs.try_clone().unwrap());
        script(reader, theirs);
    });
    Agent::new(ours)
}

fn request(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).unwrap();
    let start = line.iter().position(|&b| b == b'{').unwrap();
    serde_json::from_slice(&line[start..]).unwrap()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[test]
fn sync_skips_stale_replies_and_garbage() {
    let mut agent = fake_agent(|mut reader, mut writer| {
        let req = request(&mut reader);
        assert_eq!(req["execute"], "guest-sync-delimited");
        let id = req["arguments"]["id"].as_i64().unwrap();
        // A stale reply, half a line, then the real delimited answer.
        writer.write_all(b"{\"return\": 12}\n{\"ret").unwrap();
        writer.write_all(b"\n\xff").unwrap();
        writer.write_all(format!("{{\"return\": {id}}}\n").as_bytes()).unwrap();
        // Keep the socket open until the client is done.
        let _ = request(&mut reader);
    });
    agent.sync(soon(), &mut || Ok(())).unwrap();
}

#[test]
fn sync_times_out_when_nobody_answers() {
    let mut agent = fake_agent(|mut reader, _writer| {
        let _ = request(&mut reader);
        thread::sleep(Duration::from_secs(2));
    });
    let deadline = Instant::now() + Duration::from_millis(300);
    assert!(matches!(agent.sync(deadline, &mut || Ok(())), Err(WaitError::TimedOut)));
}

#[test]
fn sync_fails_fast_when_the_vm_dies() {
    let mut agent = fake_agent(|mut reader, _writer| {
        let _ = request(&mut reader);
        thread::sleep(Duration::from_secs(2));
    });
    let started = Instant::now();
    let result = agent.sync(Instant::now() + Duration::from_secs(60), &mut || {
        Err(anyhow!("QEMU exited"))
    });
    assert!(matches!(result, Err(WaitError::Dead(_))));
    // Well before the deadline, with room for a slow machine (this suite
    // also runs inside an emulated guest).
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn exec_and_status_round_trip() {
    let mut agent = fake_agent(|mut reader, mut writer| {
        let req = request(&mut reader);
        assert_eq!(req["execute"], "guest-exec");
        assert_eq!(req["arguments"]["path"], "bash");
        assert_eq!(req["arguments"]["arg"], serde_json::json!(["-c", "exit 3"]));
        assert_eq!(req["arguments"]["env"], serde_json::json!(["A=b"]));
        assert_eq!(req["arguments"]["capture-output"], false);
        writer.write_all(b"{\"return\": {\"pid\": 42}}\n").unwrap();
        let req = request(&mut reader);
        assert_eq!(req["execute"], "guest-exec-status");
        assert_eq!(req["arguments"]["pid"], 42);
        writer.write_all(b"{\"return\": {\"exited\": false}}\n").unwrap();
        let _ = request(&mut reader);
        writer
            .write_all(b"{\"return\": {\"exited\": true, \"exitcode\": 3}}\n")
            .unwrap();
        let _ = request(&mut reader);
        writer
            .write_all(b"{\"return\": {\"exited\": true, \"signal\": 9}}\n")
            .unwrap();
        let _ = request(&mut reader);
        writer
            .write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid parameter 'pid'\"}}\n")
            .unwrap();
    });
    let pid = agent
        .spawn("bash", vec!["-c".into(), "exit 3".into()], vec!["A=b".into()], soon())
        .unwrap();
    assert_eq!(pid, 42);
    assert_eq!(agent.status(pid, soon()).unwrap(), None);
    assert_eq!(agent.status(pid, soon()).unwrap(), Some(ExitStatus::Code(3)));
    assert_eq!(agent.status(pid, soon()).unwrap(), Some(ExitStatus::Signal(9)));
    let err = agent.status(pid, soon()).unwrap_err().to_string();
    assert!(err.contains("Invalid parameter 'pid'"), "{err}");
}
