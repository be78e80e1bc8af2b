//! The end-to-end harness: starts a private X server (Xvfb), `tauri-driver` in front of
//! WebKitWebDriver, and the real `hearth` binary with its own profile folder, then hands the
//! test a WebDriver client. Every test gets its own display, ports and profile, so tests run in
//! parallel. A failing test leaves a screenshot in `<target>/e2e-artifacts/`, beside the
//! driver's log (`<test>-driver.log`: tauri-driver's, WebKitWebDriver's and the app's
//! messages), both named in the failure.
//!
//! Every WebDriver command goes through [`Driver`], which bounds it by [`CALL_TIMEOUT`]: a
//! command that never answers fails the test instead of hanging the run.
//!
//! Nothing is skipped: a missing tool or binary is a failure that says what to install.

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{ClientBuilder, Locator};
use hearth_testkit::KillOnDrop;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod driver;

pub use driver::{Driver, El, CALL_TIMEOUT};
pub use fantoccini::key::Key;

/// How long to wait for the app and its peers before calling it a failure.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for something to appear in the window.
pub const UI_TIMEOUT: Duration = Duration::from_secs(20);
const WEBKIT_DRIVER: &str = "/usr/bin/WebKitWebDriver";

/// A running Hearth window and the processes behind it. Dropping it stops them all (fields
/// drop in order: the driver and the app before the display, the profile folder last).
pub struct Desktop {
    /// The WebDriver session with the window (every command bounded).
    pub client: Driver,
    name: String,
    _driver: KillOnDrop,
    _xvfb: KillOnDrop,
    /// The test's folder (configuration files, HOME, the profile unless one was given).
    pub data_dir: tempfile::TempDir,
    profile: PathBuf,
}

/// What to start the app with.
#[derive(Debug, Clone, Default)]
pub struct LaunchSpec {
    /// Extra command-line arguments after `--data-dir`.
    pub args: Vec<String>,
    /// Contents of the configuration file the app is started with (`HEARTH_CONFIG`; none: no
    /// file, i.e. demo mode).
    pub config: Option<String>,
    /// Contents of the machine-wide configuration, which `config` may not weaken (none: no
    /// machine-wide file). The app (a debug build) reads it from `HEARTH_MACHINE_CONFIG`,
    /// which the harness always sets, so no test reads this machine's own file.
    pub machine_config: Option<String>,
    /// An existing profile folder to open again (none: a fresh one in the test's folder).
    pub profile: Option<PathBuf>,
}

/// The folder where cargo put this test binary's siblings (`target/<profile>`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the test binary")?;
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("unexpected test binary location {}", exe.display()))
}

/// The `hearth` binary under test: `HEARTH_APP_BIN`, or the one cargo built beside the tests.
pub fn app_binary() -> Result<PathBuf> {
    let bin = match std::env::var_os("HEARTH_APP_BIN") {
        Some(p) => PathBuf::from(p),
        None => profile_dir()?.join("hearth"),
    };
    if !bin.is_file() {
        bail!(
            "the Hearth binary {} does not exist: build it first (`cargo build -p hearth`, which \
             needs ui/dist from scripts/build-ui), as scripts/test does",
            bin.display()
        );
    }
    Ok(bin)
}

/// Where screenshots go.
pub fn artifacts_dir() -> Result<PathBuf> {
    let dir = profile_dir()?.join("e2e-artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn require_tool(name: &str, install: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false);
    if !found && !Path::new(name).is_file() {
        bail!("{name} is not installed ({install}); run scripts/setup");
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Starts Xvfb on a display it picks itself (`-displayfd`), so parallel tests never collide.
fn start_xvfb() -> Result<(KillOnDrop, String)> {
    require_tool("Xvfb", "Debian package xvfb")?;
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1440x900x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start Xvfb")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("Xvfb has no stdout"))?;
    let guard = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("Xvfb did not report its display")?;
    let display: u32 = line
        .trim()
        .parse()
        .with_context(|| format!("Xvfb reported display {line:?}"))?;
    Ok((guard, format!(":{display}")))
}

/// Polls `check` until it yields `Some`, or fails after `timeout` with `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        // A WebDriver call can hang (e.g. on a page that never finished loading): bound each
        // check by the time left, so the timeout holds whatever the check does.
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, check()).await {
            Ok(Ok(Some(v))) => return Ok(v),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => last_error = Some(anyhow!("the last check did not answer")),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The profile folder (`--data-dir`) inside a test's folder.
fn profile_of(test_dir: &Path) -> PathBuf {
    test_dir.join("profile")
}

impl Desktop {
    /// The app's profile folder (`--data-dir`): its encrypted store is `hearth.db` there.
    pub fn profile_dir(&self) -> PathBuf {
        self.profile.clone()
    }

    /// Starts Hearth in demo mode with a fresh profile.
    pub async fn launch(name: &str) -> Result<Self> {
        Self::launch_with(name, LaunchSpec::default()).await
    }

    pub async fn launch_with(name: &str, spec: LaunchSpec) -> Result<Self> {
        let app = app_binary()?;
        require_tool(
            "tauri-driver",
            "cargo install tauri-driver --version 2.1.0 --locked",
        )?;
        require_tool(WEBKIT_DRIVER, "Debian package webkit2gtk-driver")?;
        let (xvfb, display) = start_xvfb()?;
        let data_dir = tempfile::Builder::new()
            .prefix(&format!("hearth-e2e-{name}-"))
            .tempdir()
            .context("cannot create a profile folder")?;
        let home = data_dir.path().join("home");
        std::fs::create_dir_all(&home)?;
        let config_path = data_dir.path().join("config.toml");
        if let Some(text) = &spec.config {
            std::fs::write(&config_path, text)?;
        }
        let machine_config_path = data_dir.path().join("machine-config.toml");
        if let Some(text) = &spec.machine_config {
            std::fs::write(&machine_config_path, text)?;
        }
        let profile = spec
            .profile
            .clone()
            .unwrap_or_else(|| profile_of(data_dir.path()));

        let (port, native_port) = (free_port()?, free_port()?);
        let mut driver = Command::new("tauri-driver");
        driver
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native_port.to_string(),
            ])
            .args(["--native-driver", WEBKIT_DRIVER])
            .env("DISPLAY", &display)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("HEARTH_CONFIG", &config_path)
            .env("HEARTH_MACHINE_CONFIG", &machine_config_path)
            .env_remove("WAYLAND_DISPLAY")
            .env("GDK_BACKEND", "x11")
            // No GPU under Xvfb: render in software.
            .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stdout(Stdio::null());
        // The driver's (and the app's) own messages, for diagnosing a failed start.
        let log_path = artifacts_dir()?.join(format!("{name}-driver.log"));
        driver.stderr(std::fs::File::create(&log_path)?);
        let mut driver = KillOnDrop(driver.spawn().context("cannot start tauri-driver")?);

        let url = format!("http://127.0.0.1:{port}");
        let log = log_path.display().to_string();
        wait_until(STARTUP_TIMEOUT, "tauri-driver to listen", || {
            let exited = driver.0.try_wait();
            let log = log.clone();
            async move {
                if let Ok(Some(status)) = exited {
                    bail!("tauri-driver exited ({status}); its messages are in {log}");
                }
                let connect = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
                Ok(connect.ok().map(|_| ()))
            }
        })
        .await?;

        let mut args = vec!["--data-dir".to_string(), profile.display().to_string()];
        args.extend(spec.args);
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "wry".into());
        caps.insert(
            "tauri:options".into(),
            serde_json::json!({ "application": app, "args": args }),
        );
        let connect = async {
            ClientBuilder::rustls()
                .context("cannot set up the WebDriver client")?
                .capabilities(caps)
                .connect(&url)
                .await
                .context("WebDriver could not start a session with the Hearth window")
        };
        let client = tokio::time::timeout(STARTUP_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow!("the Hearth window did not open within {STARTUP_TIMEOUT:?}"))?
            .with_context(|| format!("the driver's log: {log}"))?;
        Ok(Self {
            client: Driver::new(client, log_path),
            data_dir,
            profile,
            name: name.to_string(),
            _driver: driver,
            _xvfb: xvfb,
        })
    }

    /// A number from one of the window's `data-*` attributes.
    pub async fn number_attr(&self, css: &str, attr: &str) -> Result<f64> {
        let app = self;
        let Some(el) = app.client.find_optional(Locator::Css(css)).await? else {
            return Ok(0.0);
        };
        Ok(el
            .attr(attr)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0))
    }

    /// Scrolls `css` into view and clicks it (the pane is taller than the window).
    pub async fn click_in_view(&self, css: &str) -> Result<()> {
        let app = self;
        app.client
            .execute(
                &format!("const el = document.querySelector({css:?}); if (el) el.scrollIntoView({{block: 'center'}}); return true;"),
                vec![],
            )
            .await?;
        app.client
            .find(Locator::Css(css))
            .await?
            .click()
            .await
            .with_context(|| format!("clicking {css}"))
    }

    /// Reads the pattern's stamp from a screenshot of the window, in the canvas `css`.
    pub async fn stamp_on_screen(&self, css: &str) -> Result<Option<hearth_media::pattern::Stamp>> {
        let app = self;
        let rect = app
            .client
            .execute(
                &format!(
                    "const el = document.querySelector({css:?}); if (!el) return null; el.scrollIntoView({{block: 'center'}}); \
                     const r = el.getBoundingClientRect(); \
                     return [r.left, r.top, r.width, window.devicePixelRatio || 1];"
                ),
                vec![],
            )
            .await?;
        if rect.is_null() {
            return Ok(None);
        }
        let n = |i: usize| rect[i].as_f64().unwrap_or(0.0);
        let (left, top, width, ratio) = (n(0), n(1), n(2), n(3));
        let png = app.client.screenshot().await?;
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info()?;
        let mut buf = vec![0; reader.output_buffer_size().context("screenshot size")?];
        let info = reader.next_frame(&mut buf)?;
        let rgba: Vec<u8> = match info.color_type {
            png::ColorType::Rgba => buf[..info.buffer_size()].to_vec(),
            png::ColorType::Rgb => buf[..info.buffer_size()]
                .chunks(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect(),
            other => return Err(anyhow!("screenshot in {other:?}")),
        };
        Ok(hearth_media::pattern::read_rgba(
            &rgba,
            info.width,
            (left * ratio).round() as u32,
            (top * ratio).round() as u32,
            (width * ratio).round() as u32,
        ))
    }

    /// Opens the first virtual visit of the schedule shown (demo mode's clinic has some).
    pub async fn open_a_virtual_visit(&self) -> Result<()> {
        let row = wait_until(STARTUP_TIMEOUT, "a virtual visit in the schedule", || async {
            let id = self
                .client
                .execute(
                    "const b = Array.from(document.querySelectorAll('[data-appointment-id]')).find((e) => e.textContent.includes('Virtual')); return b ? b.dataset.appointmentId : null;",
                    vec![],
                )
                .await?;
            Ok(id.as_str().map(str::to_owned))
        })
        .await?;
        self.click_in_view(&format!("[data-appointment-id='{row}']"))
            .await
    }

    /// Saves a PNG of the window as `<artifacts>/<test>-<label>.png` and returns its path.
    pub async fn screenshot(&self, label: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = artifacts_dir()?.join(format!("{}-{label}.png", self.name));
        std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Ends the session. On a failed test, first saves a screenshot and names it and the
    /// driver's log in the error.
    pub async fn finish(self, outcome: Result<()>) -> Result<()> {
        const CLEANUP: Duration = Duration::from_secs(15);
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = e.context(format!(
                    "the driver's log: {}",
                    self.client.log_path().display()
                ));
                match tokio::time::timeout(CLEANUP, self.screenshot("failure")).await {
                    Ok(Ok(path)) => {
                        Err(e.context(format!("screenshot of the failure: {}", path.display())))
                    }
                    Ok(Err(s)) => Err(e.context(format!("(no screenshot: {s:#})"))),
                    Err(_) => Err(e.context("(no screenshot: the window did not answer)")),
                }
            }
        };
        // Closing the session ends the app; dropping `self` then stops the driver and display.
        let _ = tokio::time::timeout(CLEANUP, self.client.close()).await;
        outcome
    }

    /// The text of the first element matching `css`, once it exists and satisfies `ok`.
    pub async fn text_when(
        &self,
        css: &str,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String> {
        wait_until(UI_TIMEOUT, what, || async {
            let Some(el) = self.client.find_optional(Locator::Css(css)).await? else {
                return Ok(None);
            };
            let text = el.text().await?;
            Ok(ok(&text).then_some(text))
        })
        .await
    }

    /// All elements matching `css`, once there is at least one.
    pub async fn all(&self, css: &str, what: &str) -> Result<Vec<El>> {
        wait_until(UI_TIMEOUT, what, || async {
            let found = self.client.find_all(Locator::Css(css)).await?;
            Ok((!found.is_empty()).then_some(found))
        })
        .await
    }

    /// Types `text` into the element matching `css` (focusing it first), as a person would.
    pub async fn type_text(&self, css: &str, text: &str) -> Result<()> {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element {css} to type into"))?;
        el.send_keys(text).await?;
        Ok(())
    }

    /// Presses a key chord on the keyboard (modifiers first, released in reverse order).
    pub async fn press(&self, keys: &[Key]) -> Result<()> {
        self.chord(keys.iter().map(|k| char::from(*k)).collect())
            .await
    }

    /// Presses an ordinary character key with modifiers held, e.g. Alt+2.
    pub async fn press_char(&self, modifiers: &[Key], c: char) -> Result<()> {
        let mut keys: Vec<char> = modifiers.iter().map(|k| char::from(*k)).collect();
        keys.push(c);
        self.chord(keys).await
    }

    /// Holds `keys` down in order, then releases them in reverse order.
    async fn chord(&self, keys: Vec<char>) -> Result<()> {
        let mut actions = KeyActions::new("keyboard".into());
        for &value in &keys {
            actions = actions.then(KeyAction::Down { value });
        }
        for &value in keys.iter().rev() {
            actions = actions.then(KeyAction::Up { value });
        }
        self.client.perform_actions(actions).await?;
        Ok(())
    }

    /// The `id` of the region (schedule, chart, visit) that holds the keyboard focus.
    pub async fn focused_region(&self) -> Result<Option<String>> {
        let active = self.client.active_element().await?;
        for region in ["region-schedule", "region-chart", "region-visit"] {
            if active.attr("id").await?.as_deref() == Some(region) {
                return Ok(Some(region.to_string()));
            }
            // Focus may sit on a control inside the region.
            let inside = self
                .client
                .find(Locator::Css(&format!("#{region}")))
                .await?
                .find_all(Locator::Css(":focus"))
                .await?;
            if !inside.is_empty() {
                return Ok(Some(region.to_string()));
            }
        }
        Ok(None)
    }
}

/// The machine configuration for a window that signs in at `ehr`'s provider: the "browser"
/// is a command that writes the sign-in URL to `url_file` (see [`Desktop::sign_in_at`]), the
/// sync polls every second; `extra` is appended (more sections).
pub fn signon_config(
    ehr: &hearth_testkit::smart::SmartEhr,
    url_file: &Path,
    extra: &str,
) -> String {
    ehr.machine_config(
        url_file,
        &format!(
            "[sync]
poll_interval_seconds = 1
{extra}"
        ),
    )
}

/// A visit service on loopback trusting `ehr`'s provider's tokens for itself and asking `ehr`
/// about appointments with its own credential (links open all day, whenever the test runs),
/// with the signed-in clinician made a participant of `appointments` at the EHR; and the
/// launch of a signed-in window that uses it and puts the patient's join link into the
/// Appointment. Keep the service for the test's length.
pub async fn with_visit_service(
    ehr: &hearth_testkit::smart::SmartEhr,
    url_file: &Path,
    appointments: &[&str],
) -> Result<(hearth_visit_server::Running, LaunchSpec)> {
    use hearth_testkit::smart::{USER_FHIR, VISIT_CLIENT_ID, VISIT_CLIENT_KID};
    // The service lets only a clinician on the appointment host it or make its links: the
    // signed-in clinician joins `appointments` at the EHR.
    for appointment in appointments {
        ehr.add_participant(appointment, USER_FHIR);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mut settings = hearth_visit_server::settings::Settings::loopback(
        port,
        &ehr.issuer,
        b"e2e-visit-link-secret-0123456789abcdef",
    );
    // The clinic's visits are at fixed hours today: links work all day, whenever this runs.
    settings.early = Duration::from_secs(24 * 3600);
    settings.late = Duration::from_secs(24 * 3600);
    // It asks the EHR about appointments with its own credential (SMART Backend Services).
    settings.ehr = Some(hearth_visit_server::settings::Ehr {
        fhir_base_url: ehr.fhir_base.clone(),
        client_id: VISIT_CLIENT_ID.to_owned(),
        private_key_pem: std::fs::read(ehr.visit_client_key.path())?,
        algorithm: hearth_visit_server::settings::Algorithm::ES384,
        key_id: Some(VISIT_CLIENT_KID.to_owned()),
    });
    let service = hearth_visit_server::start(settings, listener)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let spec = LaunchSpec {
        config: Some(signon_config(
            ehr,
            url_file,
            &format!(
                "[visit]\nservice_url = \"http://127.0.0.1:{port}/\"\nlink_to_appointment = true\nmedia_bind = \"127.0.0.1\"\n"
            ),
        )),
        ..LaunchSpec::default()
    };
    Ok((service, spec))
}

impl Desktop {
    /// Clicks "Sign in", plays the browser the window opened (its URL in `url_file`, see
    /// [`signon_config`]) through the provider's login form, and waits for the user's name in
    /// the top bar.
    pub async fn sign_in_at(&self, url_file: &Path) -> Result<()> {
        use hearth_testkit::smart::{browser_login, USER_DISPLAY, USER_NAME, USER_PASSWORD};
        self.client
            .find(Locator::Css("#sign-in-button"))
            .await?
            .click()
            .await?;
        let url = wait_until(Duration::from_secs(30), "the browser to be opened", || {
            let url_file = url_file.to_path_buf();
            async move { Ok(std::fs::read_to_string(&url_file).ok()) }
        })
        .await?;
        let redirect = url::Url::parse(&url)?
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned())
            .context("no redirect_uri in the authorization URL")?;
        let (done, browser) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = done.send(browser_login(&url, &redirect, USER_NAME, USER_PASSWORD));
        });
        tokio::time::timeout(STARTUP_TIMEOUT, browser)
            .await
            .map_err(|_| anyhow!("the browser's sign-in did not end within {STARTUP_TIMEOUT:?}"))??
            .map_err(|e| anyhow!("the browser's sign-in failed: {e}"))?;
        self.text_when("#current-user", "the signed-in user's name", |t| {
            t == USER_DISPLAY
        })
        .await?;
        Ok(())
    }
}
