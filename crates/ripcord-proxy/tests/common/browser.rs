//! Headless Chromium driven over the DevTools protocol, for the dashboard
//! test: finding (or installing) the binary, launching it with a throwaway
//! profile, a minimal websocket client (enough for DevTools: text frames,
//! client masking, fragmented messages) and a few protocol calls.
//!
//! The browser is killed and its profile removed when [`Browser`] is dropped,
//! whatever happened.

#![allow(dead_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[path = "tool.rs"]
mod tool;

/// The names Chromium goes by on `PATH`.
const CHROMIUM: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome-stable",
    "google-chrome",
];

/// Where to find Chromium: `$RIPCORD_CHROMIUM`, then the usual names on
/// `PATH`.
pub(crate) fn find_chromium() -> Option<PathBuf> {
    tool::find("RIPCORD_CHROMIUM", CHROMIUM)
}

/// Finds Chromium, running `scripts/ensure-chromium.sh` (which installs
/// Debian's package when it can) if there is none yet. `None` when there is
/// still none: the caller fails, it does not skip.
pub(crate) fn find_or_install_chromium() -> Option<PathBuf> {
    tool::find_or_install("RIPCORD_CHROMIUM", CHROMIUM, "ensure-chromium.sh")
}

/// A running headless Chromium with its own profile directory.
pub(crate) struct Browser {
    child: Child,
    profile: PathBuf,
    /// The browser-wide DevTools websocket URL path and port.
    pub(crate) port: u16,
    pub(crate) ws_path: String,
}

impl Browser {
    /// Launches `binary` headless with a window of `width`×`height` and
    /// waits (up to 60 s) for its DevTools endpoint.
    pub(crate) fn launch(binary: &Path, width: u32, height: u32) -> io::Result<Browser> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let profile =
            std::env::temp_dir().join(format!("ripcord-dashboard-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&profile)?;
        let log = std::fs::File::create(profile.join("chromium.log"))?;
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so that Drop ends its helpers too.
            .process_group(0)
            .spawn()?;
        // From here on, Drop kills the browser and removes the profile.
        let mut browser = Browser {
            child,
            profile,
            port: 0,
            ws_path: String::new(),
        };
        let active = browser.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    if let Ok(port) = port.trim().parse() {
                        browser.port = port;
                        browser.ws_path = path.trim().to_string();
                        return Ok(browser);
                    }
                }
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                return Err(io::Error::other(format!(
                    "chromium exited with {status} before opening DevTools: {}",
                    browser.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "chromium did not open DevTools within 60 s: {}",
                    browser.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The browser's stderr so far (for failure messages).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.profile.join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group this browser leads (renderers, zygote), then the
        // browser itself in case the group kill could not run. `-s KILL --`
        // is spelled out because procps-ng 4.0's kill(1) reads
        // `kill -KILL -<pgid>` as kill(-9, SIGKILL): process group 9.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--"])
            .arg(format!("-{}", self.child.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A DevTools session on one page, over the browser's websocket.
pub(crate) struct Page {
    ws: WebSocket,
    session: String,
    next_id: u64,
}

impl Page {
    /// Opens a new page of `browser` and attaches to it.
    pub(crate) async fn open(browser: &Browser, width: u32, height: u32) -> io::Result<Page> {
        let ws = WebSocket::connect(browser.port, &browser.ws_path).await?;
        let mut page = Page {
            ws,
            session: String::new(),
            next_id: 0,
        };
        let target = page
            .call_browser("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = page
            .call_browser(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        page.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| io::Error::other(format!("no session id in {attached}")))?
            .to_string();
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await?;
        Ok(page)
    }

    async fn send(&mut self, method: &str, params: Value, session: bool) -> io::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if session {
            msg["sessionId"] = Value::String(self.session.clone());
        }
        self.ws.send_text(&msg.to_string()).await?;
        loop {
            let text = self.ws.recv_text().await?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| io::Error::other(format!("bad DevTools message ({e}): {text}")))?;
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    return Err(io::Error::other(format!("{method} failed: {err}")));
                }
                return Ok(v["result"].clone());
            }
            // Events and other answers are of no interest here.
        }
    }

    async fn call_browser(&mut self, method: &str, params: Value) -> io::Result<Value> {
        self.send(method, params, false).await
    }

    /// Calls `method` on the page.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> io::Result<Value> {
        self.send(method, params, true).await
    }

    /// Navigates to `url`.
    pub(crate) async fn navigate(&mut self, url: &str) -> io::Result<()> {
        let r = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(e) = r.get("errorText") {
            return Err(io::Error::other(format!("navigation to {url} failed: {e}")));
        }
        Ok(())
    }

    /// Evaluates `expression` in the page and returns its value.
    pub(crate) async fn eval(&mut self, expression: &str) -> io::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(io::Error::other(format!("`{expression}` threw: {e}")));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until it returns something other
    /// than `null`/`false`, for at most `limit`; returns that value.
    pub(crate) async fn wait_for(
        &mut self,
        expression: &str,
        limit: Duration,
    ) -> io::Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = self.eval(expression).await?;
            if !(v.is_null() || v == Value::Bool(false)) {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("`{expression}` did not hold within {limit:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG screenshot of the viewport.
    pub(crate) async fn screenshot(&mut self) -> io::Result<Vec<u8>> {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = r["data"]
            .as_str()
            .ok_or_else(|| io::Error::other("no screenshot data"))?;
        base64_decode(data).ok_or_else(|| io::Error::other("screenshot is not base64"))
    }
}

/// The client side of a websocket: enough for DevTools.
struct WebSocket {
    stream: BufReader<TcpStream>,
    mask_seed: u32,
}

impl WebSocket {
    async fn connect(port: u16, path: &str) -> io::Result<WebSocket> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: cmlwY29yZC1kYXNoYm9hcmQ=\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut stream = BufReader::new(stream);
        // Read the response head byte by byte so no frame data is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = stream.read_u8().await?;
            head.push(b);
            if head.len() > 16 * 1024 {
                return Err(io::Error::other("websocket handshake answer too long"));
            }
        }
        let head = String::from_utf8_lossy(&head);
        if !head.starts_with("HTTP/1.1 101") {
            return Err(io::Error::other(format!(
                "websocket handshake refused: {head}"
            )));
        }
        Ok(WebSocket {
            stream,
            mask_seed: 0x9e37_79b9,
        })
    }

    async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let payload = text.as_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x81); // FIN, text
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= 0xffff {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.mask_seed = self
            .mask_seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let mask = self.mask_seed.to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.get_mut().write_all(&frame).await
    }

    /// The next whole text message (pings answered, fragments joined).
    async fn recv_text(&mut self) -> io::Result<String> {
        let mut message = Vec::new();
        loop {
            let b0 = self.stream.read_u8().await?;
            let b1 = self.stream.read_u8().await?;
            let fin = b0 & 0x80 != 0;
            let opcode = b0 & 0x0f;
            let mut len = u64::from(b1 & 0x7f);
            if len == 126 {
                len = u64::from(self.stream.read_u16().await?);
            } else if len == 127 {
                len = self.stream.read_u64().await?;
            }
            let mask = if b1 & 0x80 != 0 {
                let mut m = [0u8; 4];
                self.stream.read_exact(&mut m).await?;
                Some(m)
            } else {
                None
            };
            if len > 256 * 1024 * 1024 {
                return Err(io::Error::other("websocket frame too large"));
            }
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).await?;
            if let Some(m) = mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= m[i % 4];
                }
            }
            match opcode {
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message)
                            .map_err(|e| io::Error::other(format!("non-UTF-8 message: {e}")));
                    }
                }
                0x8 => return Err(io::Error::other("the browser closed the websocket")),
                0x9 => {
                    // Ping: answer with a pong carrying the same data.
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    self.stream.get_mut().write_all(&pong).await?;
                }
                _ => {} // pong or reserved: ignore
            }
        }
    }
}

/// Decodes standard base64 (with or without padding).
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}
