//! The WebDriver client as the tests use it: every command bounded by [`CALL_TIMEOUT`].
//!
//! A WebDriver command can go unanswered for good (a screenshot at the idle sign-in screen was
//! seen to hang, and every later command queued behind it for 18 minutes). Here such a command
//! fails the test within its timeout, naming the command and the driver's log (tauri-driver's
//! and WebKitWebDriver's messages, kept in the e2e-artifacts folder).

use anyhow::{anyhow, Result};
use fantoccini::actions::Actions;
use fantoccini::error::CmdError;
use fantoccini::{elements::Element, Client, Locator};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest one WebDriver command may take before the test fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What every command needs: its bound and the log to name when it fails.
struct Bounds {
    timeout: Duration,
    log: PathBuf,
}

impl Bounds {
    /// Runs one WebDriver command within the bound; an error or a command that does not answer
    /// names the command (`what`) and the driver's log.
    async fn call<T>(
        &self,
        what: impl std::fmt::Display,
        call: impl Future<Output = Result<T, CmdError>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(anyhow!(e).context(format!("WebDriver: {what} failed"))),
            Err(_) => Err(anyhow!(
                "WebDriver: {what} did not answer within {:?} (the driver's log: {})",
                self.timeout,
                self.log.display()
            )),
        }
    }
}

fn describe(locator: &Locator<'_>) -> String {
    match locator {
        Locator::Css(s) => format!("css {s:?}"),
        Locator::Id(s) => format!("id {s:?}"),
        Locator::LinkText(s) => format!("link text {s:?}"),
        Locator::XPath(s) => format!("xpath {s:?}"),
    }
}

/// The session with the Hearth window; every command bounded.
#[derive(Clone)]
pub struct Driver {
    client: Client,
    bounds: Arc<Bounds>,
}

impl Driver {
    /// `client`'s commands bounded by [`CALL_TIMEOUT`]; `log` is the driver's log file.
    pub fn new(client: Client, log: PathBuf) -> Self {
        Self::with_timeout(client, log, CALL_TIMEOUT)
    }

    /// `client`'s commands bounded by `timeout`.
    pub fn with_timeout(client: Client, log: PathBuf, timeout: Duration) -> Self {
        Self {
            client,
            bounds: Arc::new(Bounds { timeout, log }),
        }
    }

    /// The driver's log file (tauri-driver's and WebKitWebDriver's stderr).
    pub fn log_path(&self) -> &Path {
        &self.bounds.log
    }

    fn el(&self, el: Element) -> El {
        El {
            el,
            bounds: self.bounds.clone(),
        }
    }

    /// The first element matching `locator` (an error if there is none).
    pub async fn find(&self, locator: Locator<'_>) -> Result<El> {
        let what = format!("find {}", describe(&locator));
        let el = self.bounds.call(what, self.client.find(locator)).await?;
        Ok(self.el(el))
    }

    /// The first element matching `locator`, or `None` if there is none; any other failure
    /// (including no answer) is an error, never taken for "not there".
    pub async fn find_optional(&self, locator: Locator<'_>) -> Result<Option<El>> {
        let what = format!("find {}", describe(&locator));
        let found = self
            .bounds
            .call(what, async {
                match self.client.find(locator).await {
                    Ok(el) => Ok(Some(el)),
                    Err(e) if e.is_no_such_element() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(found.map(|el| self.el(el)))
    }

    /// Every element matching `locator` (perhaps none).
    pub async fn find_all(&self, locator: Locator<'_>) -> Result<Vec<El>> {
        let what = format!("find all {}", describe(&locator));
        let found = self
            .bounds
            .call(what, self.client.find_all(locator))
            .await?;
        Ok(found.into_iter().map(|el| self.el(el)).collect())
    }

    /// The element holding the keyboard focus.
    pub async fn active_element(&self) -> Result<El> {
        let el = self
            .bounds
            .call("active element", self.client.active_element())
            .await?;
        Ok(self.el(el))
    }

    /// The window's title.
    pub async fn title(&self) -> Result<String> {
        self.bounds.call("title", self.client.title()).await
    }

    /// Runs a script in the page.
    pub async fn execute(
        &self,
        script: &str,
        args: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.bounds
            .call("execute script", self.client.execute(script, args))
            .await
    }

    /// Opens `url` in the window.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.bounds
            .call(format!("go to {url}"), self.client.goto(url))
            .await
    }

    /// Performs input actions (keys held and released).
    pub async fn perform_actions(&self, actions: impl Into<Actions>) -> Result<()> {
        self.bounds
            .call("perform actions", self.client.perform_actions(actions))
            .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        self.bounds
            .call("screenshot", self.client.screenshot())
            .await
    }

    /// Ends the session (which ends the app).
    pub async fn close(&self) -> Result<()> {
        self.bounds
            .call("close the session", self.client.clone().close())
            .await
    }
}

/// An element of the window; every command bounded.
#[derive(Clone)]
pub struct El {
    el: Element,
    bounds: Arc<Bounds>,
}

impl El {
    fn el(&self, el: Element) -> El {
        El {
            el,
            bounds: self.bounds.clone(),
        }
    }

    /// The element's rendered text.
    pub async fn text(&self) -> Result<String> {
        self.bounds.call("text of an element", self.el.text()).await
    }

    /// Clicks the element.
    pub async fn click(&self) -> Result<()> {
        self.bounds.call("click", self.el.click()).await
    }

    /// An attribute of the element.
    pub async fn attr(&self, name: &str) -> Result<Option<String>> {
        self.bounds
            .call(format!("attribute {name:?}"), self.el.attr(name))
            .await
    }

    /// A DOM property of the element.
    pub async fn prop(&self, name: &str) -> Result<Option<String>> {
        self.bounds
            .call(format!("property {name:?}"), self.el.prop(name))
            .await
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, text: &str) -> Result<()> {
        self.bounds.call("send keys", self.el.send_keys(text)).await
    }

    /// The first element inside this one matching `locator`.
    pub async fn find(&self, locator: Locator<'_>) -> Result<El> {
        let what = format!("find {} in an element", describe(&locator));
        let el = self.bounds.call(what, self.el.find(locator)).await?;
        Ok(self.el(el))
    }

    /// Every element inside this one matching `locator`.
    pub async fn find_all(&self, locator: Locator<'_>) -> Result<Vec<El>> {
        let what = format!("find all {} in an element", describe(&locator));
        let found = self.bounds.call(what, self.el.find_all(locator)).await?;
        Ok(found.into_iter().map(|el| self.el(el)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::ensure;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A WebDriver server that opens a session and answers `title`, but never answers a
    /// screenshot (as WebKitWebDriver was seen to at the idle sign-in screen).
    async fn hanging_driver() -> Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: head, then Content-Length bytes of body.
                        let mut chunk = [0u8; 4096];
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        while buf.len() < head_end + length {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + length);
                        let line = head.lines().next().unwrap_or_default().to_string();
                        let body = if line.starts_with("POST /session ") {
                            r#"{"value":{"sessionId":"s1","capabilities":{}}}"#
                        } else if line.contains("/title ") {
                            r#"{"value":"Hearth"}"#
                        } else if line.contains("/screenshot ") {
                            // Never answers, holding the connection.
                            std::future::pending::<()>().await;
                            return;
                        } else {
                            r#"{"value":null}"#
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(url)
    }

    #[tokio::test]
    async fn a_command_that_never_answers_fails_within_its_bound_naming_the_log() -> Result<()> {
        let url = hanging_driver().await?;
        let client = fantoccini::ClientBuilder::rustls()?.connect(&url).await?;
        let bound = Duration::from_millis(500);
        let driver = Driver::with_timeout(client, PathBuf::from("/x/t-driver.log"), bound);
        ensure!(driver.title().await? == "Hearth");

        let started = std::time::Instant::now();
        let err = match driver.screenshot().await {
            Ok(_) => anyhow::bail!("the hanging screenshot answered"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(started.elapsed() < Duration::from_secs(5), "{err}");
        ensure!(
            err.contains("screenshot did not answer within 500ms")
                && err.contains("/x/t-driver.log"),
            "{err}"
        );
        // Every later command queues behind the hung one: each fails within its bound too.
        let started = std::time::Instant::now();
        ensure!(driver.title().await.is_err());
        ensure!(started.elapsed() < Duration::from_secs(5));
        Ok(())
    }
}
