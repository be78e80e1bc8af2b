//! The video call in Hearth's own window: signed in at the identity provider, the clinician
//! starts video in the visit pane, a patient in headless Debian Chromium joins from the join
//! page (its fake camera plays the self-stamping test pattern from a Y4M file, its microphone a
//! tone), waits in the lobby, is admitted with a click in Hearth's window, and the two see,
//! hear and chat with each other. Ending the visit in Hearth writes its Encounter to the real
//! FHIR server.

use anyhow::{ensure, Context, Result};
use fantoccini::Locator;
use hearth_e2e::{wait_until, Desktop};
use hearth_media::pattern;
use hearth_testkit::smart::SmartEhr;
use hearth_testkit::visit::ChromeDriver;
use std::time::Duration;

const CHILD: &str = "HEARTH_E2E_CALL_CHILD";
const WAIT: Duration = Duration::from_secs(60);

/// The join-page browser helper of the visit service's tests (it waits with [`wait_for`]).
#[path = "../../crates/visit-server/tests/common/browser.rs"]
#[allow(dead_code, clippy::unwrap_used, reason = "shared test helper")]
mod browser;

/// Waits until `check` yields a value; panics naming `what` after `timeout`.
async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_call_in_hearths_window_with_a_patient_in_chromium() -> Result<()> {
    let name = "a_video_call_in_hearths_window_with_a_patient_in_chromium";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    let Some((ehr, clinic)) = SmartEhr::with_clinic(name) else {
        return Ok(());
    };
    let url_file = home.join("sign-in-url.txt");
    let appointment = clinic.appointments[1].clone();
    let (_service, spec) = hearth_e2e::with_visit_service(&ehr, &url_file, &[&appointment]).await?;
    // The patient's fake devices: the pattern (frame numbers in pixels) and a tone.
    let devices = tempfile::tempdir()?;
    let flags = pattern::write_fake_devices(devices.path())?;
    let chrome = tokio::task::spawn_blocking(ChromeDriver::start).await?;
    let app = Desktop::launch_with("call", spec).await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| t.contains("Sign in"))
            .await?;
        app.sign_in_at(&url_file).await?;
        let row = format!("[data-appointment-id='{appointment}']");
        let button = wait_until(WAIT, "the virtual visit in the schedule", || async {
            app.client.find_optional(Locator::Css(&row)).await
        })
        .await?;
        button.click().await?;
        // Video first: Hearth joins the visit with its (synthetic) camera and microphone.
        let start = wait_until(WAIT, "the Start video button", || async {
            app.client.find_optional(Locator::Css("#call-start")).await
        })
        .await?;
        start.click().await.context("clicking Start video")?;
        wait_until(WAIT, "the call to be live", || async {
            let phase = match app.client.find_optional(Locator::Css("#call")).await? {
                Some(el) => el.attr("data-phase").await?,
                None => None,
            };
            Ok((phase.as_deref() == Some("live")).then_some(()))
        })
        .await?;
        // The patient's join link, from the pane.
        app.click_in_view("#invite-patient").await?;
        let link = wait_until(WAIT, "the join link", || async {
            let Some(input) = app.client.find_optional(Locator::Css("#invite-link")).await? else {
                return Ok(None);
            };
            Ok(input.prop("value").await?.filter(|v| v.contains("/join#")))
        })
        .await?;
        let page = browser::Browser::open_with(&chrome, "patient", &link, &flags).await;
        page.join_as("Ana Lopez").await;

        // Admit in Hearth's window.
        app.text_when("#room-waiting .room-name", "the patient in the waiting room", |t| {
            t == "Ana Lopez"
        })
        .await?;
        app.click_in_view(".admit-button").await?;
        page.wait_state("call").await;

        // Hearth decodes the patient's video and hears the tone.
        let tile = "#call-tiles .call-tile:not(.self)";
        wait_until(WAIT, "Hearth to decode 60 of the patient's frames", || async {
            let n = app.number_attr(&format!("{tile} .tile-counts"), "data-frames-decoded").await?;
            Ok((n >= 60.0).then_some(()))
        })
        .await?;
        wait_until(WAIT, "Hearth to hear the patient's tone", || async {
            let level = app.number_attr(&format!("{tile} .tile-counts"), "data-audio-level").await?;
            Ok((level > 0.05).then_some(level))
        })
        .await?;
        // ...paints it in the pane...
        wait_until(WAIT, "the pane to paint 30 of the patient's frames", || async {
            let n = app.number_attr("#tile-1", "data-frames").await?;
            Ok((n >= 30.0).then_some(()))
        })
        .await?;
        // ...and a screenshot of the window shows the patient's test pattern: the frame
        // number written in its pixels reads back (one of the Y4M's 60).
        let stamp = wait_until(WAIT, "the pattern's stamp in a screenshot of the pane", || async {
            app.stamp_on_screen("#tile-1").await
        })
        .await?;
        ensure!(stamp.frame < 60, "a frame number of the patient's file: {stamp:?}");
        app.screenshot("in-call").await?;
        // Chromium decodes Hearth's video.
        let s = page.decoding().await;
        ensure!(s["framesDecoded"].as_u64().unwrap_or(0) > 0, "{s}");

        // Chat both ways.
        app.type_text("#call-chat-input", "Hello Ana, can you hear me?").await?;
        app.click_in_view("#call-chat-send").await?;
        wait_for(WAIT, "the page to show Hearth's chat line", || async {
            let v = page
                .js("return Array.from(document.querySelectorAll('#chat-log .chat-msg')).map((p) => p.textContent).join('\\n')")
                .await;
            v.as_str().filter(|t| t.contains("Hello Ana, can you hear me?")).map(str::to_owned)
        })
        .await;
        page.client.find(Locator::Css("#chat-button")).await?.click().await?;
        page.client.find(Locator::Css("#chat-input")).await?.send_keys("Yes, I hear you").await?;
        page.client.find(Locator::Css("#chat-form button[type=submit]")).await?.click().await?;
        app.text_when("#call-chat-log", "the patient's chat line in Hearth", |t| {
            t.contains("Ana Lopez (patient): Yes, I hear you")
        })
        .await?;

        // End for all: the patient sees the end; the Encounter reaches the FHIR server.
        app.click_in_view("#call-end").await?;
        page.wait_state("ended").await;
        app.text_when("#call-encounter", "the Encounter note", |t| t.contains("Encounter"))
            .await?;
        let fhir = ehr.fhir.as_ref().context("the clinic's FHIR server")?;
        let path = format!("/fhir/Encounter?appointment=Appointment/{appointment}");
        let encounter = wait_until(WAIT, "the visit's Encounter at the FHIR server", || async {
            let text = tokio::task::block_in_place(|| fhir.get_json(&path));
            let bundle: serde_json::Value = serde_json::from_str(&text)?;
            Ok(bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["resource"].clone())
                .find(|r| r["class"]["code"] == "VR"))
        })
        .await?;
        ensure!(encounter["status"] == "finished", "{encounter}");
        ensure!(
            encounter["participant"].as_array().is_some_and(|p| p.len() >= 2),
            "the clinician's and the patient's periods: {encounter}"
        );
        page.close().await;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

/// Demo mode: no server at all. Start video on a virtual visit of the demo clinic; the
/// simulated patient (a second engine on this machine) waits, is admitted from the pane, and
/// its test pattern is painted in the patient's tile (read back from a screenshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_offers_a_simulated_patient_for_a_live_call() -> Result<()> {
    let app = Desktop::launch("demo-call").await?;
    let outcome = async {
        app.open_a_virtual_visit().await?;
        app.click_in_view("#call-start").await?;
        wait_until(WAIT, "the simulated patient waiting", || async {
            app.client
                .find_optional(Locator::Css(".call-admit-button"))
                .await
        })
        .await?;
        app.click_in_view(".call-admit-button").await?;
        wait_until(
            WAIT,
            "the pane to paint 30 of the simulated patient's frames",
            || async {
                let n = app.number_attr("#tile-1", "data-frames").await?;
                Ok((n >= 30.0).then_some(()))
            },
        )
        .await?;
        let stamp = wait_until(WAIT, "the pattern's stamp in a screenshot", || async {
            app.stamp_on_screen("#tile-1").await
        })
        .await?;
        // The simulated patient stamps its send time: a recent instant.
        ensure!(stamp.sent_ms > 0, "{stamp:?}");
        app.screenshot("demo-call").await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
