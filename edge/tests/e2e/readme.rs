//! The README's Quickstart (install, server, "Upload a file", "Upload with curl (HTTP/3)",
//! "Read the store back"), read from README.md itself and run command by command, as written,
//! against a real `edge serve`, so that the README cannot drift from the code.
//!
//! What the test changes, and only that: the commands run in a temp dir holding copies of
//! `samples/` and `config/` (the repository root as a new user has it); `edge` and `edge-client`
//! on `PATH` are the binaries of this test build (what `cargo install` would put there); the
//! server listens on an ephemeral port, so `edge-client` gets it in `EDGE_SERVER` and the curl
//! commands' `localhost:4433` become `localhost:<port>`; `curl` is the HTTP/3 one the build
//! found (`EDGE_TEST_CURL`), and without one the curl commands' test is ignored. The `edge
//! <task> get|list` commands read the store file, so the server is stopped (SIGTERM) first, as
//! the README says. A command the test does not know how to take (e.g. a new `cargo` command)
//! fails the test until it is taught.

use crate::util::client_binary;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one command may take (the debug build of the server takes the million-number
/// upload in a few seconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// One command of the README, with the output the README shows for it, if any.
#[derive(Debug)]
struct Step {
    command: String,
    /// The lines of the plain ``` block that follows the command's block, if one does.
    shows: Vec<String>,
}

/// Every command of the README's Quickstart section (up to the next `## ` heading), in order.
fn quickstart() -> Vec<Step> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md is readable");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Quickstart"))
        .expect("README.md has a `## Quickstart` section");
    let mut steps: Vec<Step> = Vec::new();
    let mut fence: Option<&str> = None;
    for line in section.lines() {
        match (fence, line.strip_prefix("```")) {
            (None, Some(lang)) => fence = Some(lang.trim()),
            (Some(_), Some("")) => fence = None,
            (Some("sh"), None) => {
                let command = line.trim();
                if command.is_empty() || command.starts_with('#') {
                    continue;
                }
                assert!(!command.ends_with('\\'), "one command per line: {command}");
                steps.push(Step {
                    command: command.to_owned(),
                    shows: Vec::new(),
                });
            }
            (Some(""), None) if !line.trim().is_empty() => {
                let last = steps.last_mut().expect("an output block follows a command");
                last.shows.push(line.trim().to_owned());
            }
            _ => {}
        }
    }
    assert!(fence.is_none(), "an unclosed ``` block in the Quickstart");
    steps
}

/// What the test does with one command.
#[derive(Debug, PartialEq)]
enum Action<'a> {
    /// `cargo install --locked --path edge|client`: the test build made those binaries.
    Installed,
    /// `cargo nextest run --workspace`: this very run.
    ThisRun,
    /// `edge serve`, started in the background.
    Serve,
    /// `[export ]NAME=VALUE`: a shell variable for the commands after it.
    Assign(&'a str),
    /// `edge <task> get|list`: on the store file, with the server stopped.
    ReadStore,
    /// Anything run with curl.
    Curl,
    /// Any other command: run, and it must succeed.
    Run,
}

fn action(command: &str) -> Action<'_> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["cargo", "install", "--locked", "--path", "edge" | "client"] => Action::Installed,
        ["cargo", "nextest", "run", "--workspace"] => Action::ThisRun,
        ["cargo", ..] => panic!("the README runs `{command}`: teach this test what to do with it"),
        ["edge", "serve"] => Action::Serve,
        ["edge", task, "get" | "list", ..]
            if edge_tasks::Registry::builtin()
                .find(task)
                .is_some_and(|plugin| plugin.reads.is_some()) =>
        {
            Action::ReadStore
        }
        ["curl", ..] => Action::Curl,
        _ => match assignment(command) {
            Some(name) => Action::Assign(name),
            None => Action::Run,
        },
    }
}

/// The variable a `[export ]NAME=VALUE` line sets.
fn assignment(command: &str) -> Option<&str> {
    let rest = command.strip_prefix("export ").unwrap_or(command);
    let (name, _) = rest.split_once('=')?;
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    is_name.then_some(name)
}

/// A new user's checkout, a server, and the shell variables the README's commands set.
struct Session {
    dir: tempfile::TempDir,
    bin: PathBuf,
    vars: BTreeMap<String, String>,
    server: Option<Server>,
}

/// `edge serve`, killed if the test ends without stopping it.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Session {
    fn new() -> Session {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for folder in ["samples", "config"] {
            copy_dir(&root.join(folder), &dir.path().join(folder));
        }
        let bin = dir.path().join(".bin");
        std::fs::create_dir(&bin).unwrap();
        let mut tools = vec![
            ("edge", PathBuf::from(env!("CARGO_BIN_EXE_edge"))),
            ("edge-client", client_binary()),
        ];
        if let Some(curl) = crate::http3::h3curl() {
            tools.push(("curl", curl));
        }
        for (name, target) in tools {
            let script = format!("#!/bin/sh\nexec '{}' \"$@\"\n", target.display());
            let path = bin.join(name);
            std::fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Session {
            dir,
            bin,
            vars: BTreeMap::new(),
            server: None,
        }
    }

    /// Takes one step; `curl`: whether curl commands run (else they are passed over).
    fn take(&mut self, step: &Step, curl: bool) {
        match action(&step.command) {
            Action::Installed | Action::ThisRun => {}
            Action::Serve => self.serve(),
            Action::Assign(name) => {
                let script = format!("{}\nprintf '%s' \"${name}\"", step.command);
                let (value, _) = self.shell(&step.command, &script);
                assert!(!value.is_empty(), "`{}` set nothing", step.command);
                self.vars.insert(name.to_owned(), value);
            }
            Action::ReadStore => {
                self.stop();
                self.check(step);
            }
            Action::Curl if !curl => {}
            Action::Curl | Action::Run => self.check(step),
        }
    }

    /// Runs a step's command; it must succeed and print what the README shows for it.
    fn check(&mut self, step: &Step) {
        let port = self.server.as_ref().map(|s| s.port);
        let command = match port {
            Some(port) => step
                .command
                .replace("localhost:4433", &format!("localhost:{port}")),
            None => step.command.clone(),
        };
        let (stdout, stderr) = self.shell(&step.command, &command);
        let output = format!("{stdout}\n{stderr}");
        for shown in &step.shows {
            let shown = without_timing(shown);
            assert!(
                output
                    .lines()
                    .any(|line| without_timing(line).contains(&shown)),
                "`{}` does not print what the README shows:\n{shown}\nit printed:\n{output}",
                step.command
            );
        }
    }

    /// Runs `script` with bash in the checkout; returns (stdout, stderr), and fails the test
    /// (naming the README's `command`) unless it exits 0 within [`COMMAND_TIMEOUT`].
    fn shell(&self, command: &str, script: &str) -> (String, String) {
        let out_path = self.dir.path().join(".out");
        let err_path = self.dir.path().join(".err");
        let mut child = self
            .command("bash")
            .args(["-o", "pipefail", "-c", script])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            // Its own process group, so that a timeout ends the whole pipeline.
            .process_group(0)
            .spawn()
            .expect("bash runs");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                panic!("`{command}` did not finish within {COMMAND_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        assert!(
            status.success(),
            "`{command}` failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        (stdout, stderr)
    }

    /// A command in the checkout with the README's variables, `edge`, `edge-client` (and
    /// `curl`) first on PATH, and the server's address for `edge-client`.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .current_dir(self.dir.path())
            .env("PATH", format!("{}:{path}", self.bin.display()))
            .env_remove("EDGE_TOKEN")
            .env_remove("EDGE_CA")
            .env_remove("EDGE_SERVER")
            .env_remove("EDGE_CONFIG")
            .env_remove("EDGE_DATA_DIR")
            .env_remove("EDGE_CERTS_DIR")
            .envs(&self.vars);
        if let Some(server) = &self.server {
            command.env("EDGE_SERVER", format!("https://localhost:{}", server.port));
        }
        command
    }

    /// `edge serve`, on an ephemeral port; waits for its ready line.
    fn serve(&mut self) {
        assert!(self.server.is_none(), "the README starts the server twice");
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let mut child = self
            .command("edge")
            .arg("serve")
            .env("EDGE_LISTEN", "127.0.0.1:0")
            .env("EDGE_JOBS_SHUTDOWN_GRACE_SECS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("edge serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let mut server = Server { child, port: 0 };
        assert!(read.is_ok(), "edge serve printed no ready line");
        let addr: std::net::SocketAddr = line
            .trim()
            .strip_prefix("edge listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; log:\n{}",
                    self.server_log()
                )
            });
        assert!(addr.ip().is_loopback(), "the default listens on loopback");
        server.port = addr.port();
        self.server = Some(server);
    }

    /// Stops the server as Ctrl-C does (SIGTERM drains the same way); it must exit 0.
    fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "edge serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status}; log:\n{}", self.server_log());
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

/// `line` without a duration such as ` in 18 ms`, which differs from run to run.
fn without_timing(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let is_timing = words[i] == "in"
            && words
                .get(i + 1)
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            && words
                .get(i + 2)
                .is_some_and(|unit| unit.trim_end_matches([',', ')']) == "ms");
        if is_timing {
            // Keep what followed the unit (`ms (inserted ...`).
            if let Some(rest) = words[i + 2].strip_prefix("ms") {
                if !rest.is_empty() {
                    kept.push(rest);
                }
            }
            i += 3;
        } else {
            kept.push(words[i]);
            i += 1;
        }
    }
    kept.join(" ")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs the Quickstart; `curl`: with its curl commands.
fn run_quickstart(curl: bool) {
    let steps = quickstart();
    assert!(
        steps.iter().any(|s| action(&s.command) == Action::Serve)
            && steps
                .iter()
                .any(|s| s.command.starts_with("edge-client upload")),
        "the Quickstart lost its server or its upload: {steps:#?}"
    );
    let mut session = Session::new();
    for step in &steps {
        session.take(step, curl);
    }
    session.stop();
}

#[test]
fn the_readme_quickstart_runs_as_written() {
    run_quickstart(false);
}

#[test]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
fn the_readme_quickstart_runs_as_written_with_its_curl_commands() {
    let steps = quickstart();
    assert!(
        steps.iter().any(|s| action(&s.command) == Action::Curl),
        "no curl command in the Quickstart"
    );
    run_quickstart(true);
}

#[test]
fn the_readme_knows_how_each_quickstart_command_is_taken() {
    let steps = quickstart();
    let installs = steps
        .iter()
        .filter(|s| action(&s.command) == Action::Installed)
        .count();
    assert_eq!(installs, 2, "one install command per binary: {steps:#?}");
    assert_eq!(
        without_timing(
            "ports.json: done: 1634 records, 1634 committed, 0 errors in 18 ms (inserted 1634, updated 0, unchanged 0)"
        ),
        "ports.json: done: 1634 records, 1634 committed, 0 errors (inserted 1634, updated 0, unchanged 0)"
    );
    assert_eq!(
        action("export EDGE_TOKEN=$(edge token issue)"),
        Action::Assign("EDGE_TOKEN")
    );
    assert_eq!(action("edge ports get AEAJM"), Action::ReadStore);
    assert_eq!(action("edge token issue --sub x"), Action::Run);
}

#[test]
fn the_event_examples_give_the_sample_files_real_size() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let size = std::fs::metadata(root.join("samples/ports.json"))
        .unwrap()
        .len();
    for doc in ["README.md", "docs/PROTOCOL.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let mut seen = 0;
        for line in text
            .lines()
            .filter(|l| l.contains("ports.json") || l.contains("\"bytes\":"))
        {
            for field in ["\"size\":", "\"bytes\":"] {
                if let Some(rest) = line.split(field).nth(1) {
                    let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if line.contains("\"records\":1634") || line.contains("ports.json") {
                        assert_eq!(number, size.to_string(), "{doc}: {line}");
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 0, "{doc} shows no event of the ports.json upload");
    }
}
