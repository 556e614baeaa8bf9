//! Headless Chromium (Debian `chromium` + `chromium-driver`) driven over WebDriver.
//!
//! The client is `fantoccini` (issue 13: a maintained crate in place of our own): a plain W3C
//! WebDriver client on tokio and hyper, which the workspace already builds, and with its default
//! features off it brings no TLS stack (chromedriver listens on loopback HTTP). It is async, so
//! [`Browser`] keeps the tests synchronous by running it on a runtime of its own.
#![allow(dead_code)]

use std::future::Future;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// Where Debian and other distributions put Chromium.
const CHROMIUM: [&str; 3] = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];

/// Whether chromedriver and Chromium are installed; if not, says SKIPPED (or fails, under
/// `TONEGATE_REQUIRE_TOOLS`), as [`tool`](super::tool) does.
pub fn available() -> bool {
    let chromium = CHROMIUM.iter().any(|p| Path::new(p).exists());
    super::tool("chromedriver").is_some() && (chromium || super::tool("chromium").is_some())
}

/// chromedriver plus one browser session; both end on drop.
pub struct Browser {
    client: Client,
    // fantoccini is async and the tests are not: each command runs to completion on this.
    rt: tokio::runtime::Runtime,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium with a fresh profile.
    pub fn start() -> Browser {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with extra Chromium command-line arguments.
    pub fn start_with(extra: &[String]) -> Browser {
        // A port from a block this process claims (below the ephemeral range, so no socket
        // another test opens can take it between our check and chromedriver's bind); and if
        // chromedriver still exits (it could not bind), another port.
        let mut tries = 0;
        let (port, mut driver) = loop {
            tries += 1;
            let port = super::claimed_port(24000..26000, 1);
            let mut driver = Command::new("chromedriver")
                .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver is needed (scripts/test installs chromium-driver)");
            let deadline = Instant::now() + Duration::from_secs(30);
            let up = loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                if Instant::now() > deadline || matches!(driver.try_wait(), Ok(Some(_))) {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            if up {
                break (port, driver);
            }
            let _ = driver.kill();
            let _ = driver.wait();
            assert!(tries < 3, "chromedriver did not start (three ports tried)");
        };
        let profile = tempfile::tempdir().unwrap();
        let binary = CHROMIUM
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium is needed (scripts/test installs it)");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=420,900",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        // Callers' arguments last, e.g. the HTTPS test's --ignore-certificate-errors-spki-list.
        args.extend_from_slice(extra);
        let caps = serde_json::from_value(json!({"browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": args}}))
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let session = rt.block_on(within(
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        ));
        let client = match session {
            Some(Ok(c)) => c,
            failed => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("no browser session: {failed:?}");
            }
        };
        Browser {
            client,
            rt,
            driver,
            _profile: profile,
        }
    }

    /// Runs one WebDriver command; panics on its error, or if it takes over a minute.
    fn run<T>(&self, what: &str, command: impl Future<Output = Result<T, CmdError>>) -> T {
        match self.rt.block_on(within(command)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => panic!("webdriver {what}: {e}"),
            None => panic!("webdriver {what}: no answer in a minute"),
        }
    }

    /// Runs `f` on a freshly found element, again if the page replaced it meanwhile (a
    /// navigation makes earlier element references stale).
    fn on_element<T, F>(&self, css: &str, f: impl Fn(Element) -> F) -> T
    where
        F: Future<Output = Result<T, CmdError>>,
    {
        for _ in 0..20 {
            let e = self.find(css);
            match self.rt.block_on(within(f(e))) {
                Some(Ok(v)) => return v,
                Some(Err(e)) if e.is_stale_element_reference() => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Some(Err(e)) => panic!("webdriver on {css}: {e}"),
                None => panic!("webdriver on {css}: no answer in a minute"),
            }
        }
        panic!("{css} kept going stale");
    }

    /// Opens a URL.
    pub fn goto(&self, url: &str) {
        self.run(&format!("goto {url}"), self.client.goto(url));
    }

    /// The element for a CSS selector (waits up to 10 s for it).
    pub fn find(&self, css: &str) -> Element {
        let wait = self.client.wait().at_most(Duration::from_secs(10));
        let found = within(
            wait.every(Duration::from_millis(100))
                .for_element(Locator::Css(css)),
        );
        match self.rt.block_on(found) {
            Some(Ok(e)) => e,
            Some(Err(CmdError::WaitTimeout)) => {
                let src = self.source();
                let head: String = src.chars().take(1500).collect();
                panic!("no element {css} in page: {head}");
            }
            Some(Err(e)) => panic!("webdriver find {css}: {e}"),
            None => panic!("webdriver find {css}: no answer in a minute"),
        }
    }

    /// An element's visible text.
    pub fn text(&self, css: &str) -> String {
        self.on_element(css, |e| async move { e.text().await })
    }

    /// Waits (up to `secs`) until `css`'s text satisfies `ok`; returns the text.
    pub fn wait_text(&self, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text(css);
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{css}: text stayed {t:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks an element.
    pub fn click(&self, css: &str) {
        self.on_element(css, |e| async move { e.click().await });
    }

    /// Types into an element.
    pub fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, |e| async move { e.send_keys(text).await });
    }

    /// A DOM property of an element, as text (fantoccini gives booleans as "true"/"false").
    pub fn property(&self, css: &str, name: &str) -> String {
        self.on_element(css, |e| async move { e.prop(name).await })
            .unwrap_or_else(|| panic!("{css} has no property {name}"))
    }

    /// Runs a script and returns its result.
    pub fn script(&self, js: &str) -> Value {
        self.run("script", self.client.execute(js, vec![]))
    }

    /// Polls `js` (a script returning a string) until `ok` holds (at most `secs`); returns
    /// the value.
    pub fn wait_script(&self, js: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.script(js);
            let t = v.as_str().unwrap_or_default().to_string();
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{js}: stayed {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs an asynchronous script (its last argument is the callback that ends it) and
    /// returns what it passed to the callback.
    pub fn script_async(&self, js: &str) -> Value {
        self.run("async script", self.client.execute_async(js, vec![]))
    }

    /// Resizes the browser window (the page's viewport follows).
    pub fn resize(&self, width: u32, height: u32) {
        self.run("resize", self.client.set_window_size(width, height));
    }

    /// The page source.
    pub fn source(&self) -> String {
        self.run("source", self.client.source())
    }

    /// Saves a PNG screenshot to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.run("screenshot", self.client.screenshot());
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

/// `f`, or `None` if it takes over a minute (so a wedged chromedriver fails the test).
async fn within<T>(f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(60), f).await.ok()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and so Chromium) before chromedriver, our own child, is killed.
        let _ = self.rt.block_on(within(self.client.clone().close()));
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
