//! A small WebDriver client (W3C WebDriver over HTTP/1.1 on 127.0.0.1) for the browser tests:
//! it starts `chromedriver` on a free port, opens one headless Chromium session, and ends both
//! when dropped, also when a test panics. Blocking: run it off the async runtime.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait for the page lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Chromium, as the build found it (`has_chromium` in edge/build.rs).
fn chromium() -> PathBuf {
    PathBuf::from(option_env!("EDGE_TEST_CHROMIUM_PATH").unwrap_or("/usr/bin/chromium"))
}

/// ChromeDriver, as the build found it.
fn chromedriver() -> PathBuf {
    PathBuf::from(option_env!("EDGE_TEST_CHROMEDRIVER_PATH").unwrap_or("/usr/bin/chromedriver"))
}

/// A running chromedriver with one browser session. Dropping it ends the session (Chromium
/// quits) and kills chromedriver's process group.
pub struct Browser {
    driver: Child,
    port: u16,
    session: Option<String>,
    /// Chromium's profile, and chromedriver's log.
    dir: tempfile::TempDir,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium with `extra` flags (on top of a fresh
    /// profile and the flags that keep it from calling anywhere).
    pub fn start(extra: &[String]) -> Browser {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).expect("log file");
        let mut command = Command::new(chromedriver());
        command
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Its own process group, so that the guard ends Chromium too if it outlives its driver.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().expect("chromedriver starts");
        let mut browser = Browser {
            driver,
            port,
            session: None,
            dir,
        };
        browser.wait_ready();
        let profile = browser.dir.path().join("profile");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--lang=en-US".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra.iter().cloned());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = browser.call("POST", "/session", Some(&capabilities));
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"));
        browser.session = Some(id.to_owned());
        browser
    }

    /// Waits until chromedriver answers `/status` as ready.
    fn wait_ready(&mut self) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = request(self.port, "GET", "/status", None) {
                if status["value"]["ready"] == json!(true) {
                    return;
                }
            }
            if let Ok(Some(exit)) = self.driver.try_wait() {
                panic!("chromedriver exited: {exit}: {}", self.log());
            }
            assert!(
                Instant::now() < until,
                "chromedriver is not ready after 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// chromedriver's log, for a failure's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// A WebDriver command; panics with the driver's message when it fails.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        match request(self.port, method, path, body) {
            Ok(answer) => answer["value"].clone(),
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    /// A command of this session.
    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let session = self.session.as_deref().expect("a session is open");
        let body = (method == "POST").then_some(body);
        self.call(method, &format!("/session/{session}{path}"), body.as_ref())
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({"url": url}));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its
    /// value.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// Waits until `script` returns something other than `null`, `false` or `""`, and
    /// returns it; `what` says what the test waits for, in the failure.
    pub fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let until = Instant::now() + WAIT;
        loop {
            let value = self.run(script, args.clone());
            if !(value.is_null() || value == json!(false) || value == json!("")) {
                return value;
            }
            if Instant::now() > until {
                let page = self.run("return document.body.innerText;", json!([]));
                panic!(
                    "waited {WAIT:?} for {what}; the page says:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The element `css` selects, waiting for it to be in the page.
    pub fn find(&self, css: &str) -> Element {
        self.wait_for(
            &format!("`{css}`"),
            "return document.querySelector(arguments[0]) !== null;",
            json!([css]),
        );
        let found = self.session_call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        match found[ELEMENT].as_str() {
            Some(id) => Element(id.to_owned()),
            None => panic!("no element in {found}"),
        }
    }

    pub fn click(&self, css: &str) {
        let Element(id) = self.find(css);
        self.session_call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Types `text` into the element `css` selects (for a file input: the path of a file).
    pub fn type_into(&self, css: &str, text: &str) {
        let Element(id) = self.find(css);
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            json!({"text": text}),
        );
    }

    /// The browser console's messages since the last call, as `LEVEL message` lines.
    pub fn console(&self) -> Vec<String> {
        let entries = self.session_call("POST", "/se/log", json!({"type": "browser"}));
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Accepts the dialog the page opened (`confirm`), waiting for it; returns its text.
    pub fn accept_dialog(&self) -> String {
        let session = self.session.as_deref().expect("a session is open");
        let until = Instant::now() + WAIT;
        loop {
            if let Ok(text) = request(
                self.port,
                "GET",
                &format!("/session/{session}/alert/text"),
                None,
            ) {
                self.session_call("POST", "/alert/accept", json!({}));
                return text["value"].as_str().unwrap_or_default().to_owned();
            }
            assert!(Instant::now() < until, "no dialog within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Empties the field `css` selects, then types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let Element(id) = self.find(css);
        self.session_call("POST", &format!("/element/{id}/clear"), json!({}));
        self.type_into(css, text);
    }

    /// The page's viewport as a phone's or a desktop's (Chrome DevTools' device emulation,
    /// through chromedriver).
    pub fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
            }}),
        );
    }

    /// Saves downloads in `dir`, without asking.
    pub fn downloads_to(&self, dir: &Path) {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Browser.setDownloadBehavior", "params": {
                "behavior": "allow", "downloadPath": dir,
            }}),
        );
    }

    /// Emulates a system in dark mode (`prefers-color-scheme: dark`), or in light mode.
    pub fn dark(&self, dark: bool) {
        let value = if dark { "dark" } else { "light" };
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{"name": "prefers-color-scheme", "value": value}],
            }}),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let png = self.session_call("GET", "/screenshot", Value::Null);
        let text = png.as_str().expect("a screenshot is base64 text");
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("a screenshot decodes")
    }

    /// Saves a screenshot as `name`.png in `dir`.
    pub fn save_screenshot(&self, dir: &Path, name: &str) {
        std::fs::create_dir_all(dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.screenshot()).expect("screenshot written");
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Chromium quits with its session.
            let _ = request(self.port, "DELETE", &format!("/session/{session}"), None);
        }
        // chromedriver, and whatever of Chromium is left, are in the group it leads.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// One WebDriver request (HTTP/1.1, one connection each) and its JSON answer; `Err` with the
/// driver's error for a status other than 200.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // the body by its length (or its chunks).
    let mut answer = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let split = loop {
        if let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break split;
        }
        let n = stream.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the driver closed the connection before its answer's head".into());
        }
        answer.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let mut body = answer[split + 4..].to_vec();
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == "content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buffer[..n]);
    }
    if chunked {
        body = dechunk(&body)?;
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)))?;
    if status == 200 {
        Ok(value)
    } else {
        Err(format!(
            "{status}: {}: {}",
            value["value"]["error"], value["value"]["message"]
        ))
    }
}

/// A chunked body's bytes.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size = std::str::from_utf8(&body[..line]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| e.to_string())?;
        body = &body[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("a chunk shorter than its size")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("a chunk without its line end")?;
    }
}
