//! The Hearth window, end to end: the real binary under Xvfb, driven through WebDriver.

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, FixedOffset, Local};
use fantoccini::Locator;
use hearth_e2e::{Desktop, Key, LaunchSpec};
use serde_json::Value;

/// One of today's visits as the demo generator makes it: what the window must list.
#[derive(Debug, Clone, PartialEq)]
struct Visit {
    start: DateTime<FixedOffset>,
    /// Local start, `HH:MM`.
    time: String,
    patient: String,
    practitioner_id: String,
    /// The clinician's name with titles, e.g. `Priya Raman, NP`.
    practitioner: String,
}

/// Today's demo clinic, read from the generator's raw FHIR resources (the app's default seed,
/// today in this machine's offset, as the app's clock sees it), not through the core's views:
/// every Appointment that starts today, in start order (then by clinician).
fn demo_visits() -> Result<Vec<Visit>> {
    let now = Local::now().fixed_offset();
    let all = hearth_demo::generate(&hearth_demo::DemoOptions::new(
        hearth_demo::DEFAULT_SEED,
        now,
    ));
    let find = |reference: &str| -> Result<&Value> {
        let (ty, id) = reference.split_once('/').context("a reference")?;
        all.iter()
            .find(|r| r["resourceType"] == ty && r["id"] == id)
            .with_context(|| format!("the demo data has no {reference}"))
    };
    let mut visits = Vec::new();
    for appt in all.iter().filter(|r| r["resourceType"] == "Appointment") {
        let start = DateTime::parse_from_rfc3339(appt["start"].as_str().context("start")?)?
            .with_timezone(now.offset());
        if start.date_naive() != now.date_naive() {
            continue;
        }
        let actor = |ty: &str| -> Result<String> {
            appt["participant"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["actor"]["reference"].as_str())
                .find(|r| r.starts_with(&format!("{ty}/")))
                .map(str::to_string)
                .with_context(|| format!("an appointment without a {ty}"))
        };
        let patient = actor("Patient")?;
        let practitioner = actor("Practitioner")?;
        visits.push(Visit {
            start,
            time: start.format("%H:%M").to_string(),
            patient: person_name(find(&patient)?, false),
            practitioner_id: practitioner.trim_start_matches("Practitioner/").to_string(),
            practitioner: person_name(find(&practitioner)?, true),
        });
    }
    visits.sort_by(|a, b| (a.start, &a.practitioner).cmp(&(b.start, &b.practitioner)));
    Ok(visits)
}

/// A person's official name as the window writes it: given names and family name; for a
/// clinician also the prefix before and the suffix after a comma (`Dr. Amara Okafor, MD`).
fn person_name(resource: &Value, titles: bool) -> String {
    let name = &resource["name"][0];
    let words = |key: &str| -> Vec<String> {
        name[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let mut parts = if titles { words("prefix") } else { Vec::new() };
    parts.extend(words("given"));
    parts.extend(name["family"].as_str().map(str::to_string));
    let mut text = parts.join(" ");
    let suffix = words("suffix");
    if titles && !suffix.is_empty() {
        text = format!("{text}, {}", suffix.join(", "));
    }
    text
}

fn times_and_patients(visits: &[Visit]) -> Vec<(String, String)> {
    visits
        .iter()
        .map(|v| (v.time.clone(), v.patient.clone()))
        .collect()
}

async fn rows(app: &Desktop) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for button in app
        .all(
            "#appointment-list button.appointment",
            "the appointment list",
        )
        .await?
    {
        let time = button.find(Locator::Css(".time")).await?.text().await?;
        let patient = button.find(Locator::Css(".patient")).await?.text().await?;
        out.push((time, patient));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_opens_in_demo_mode_and_lists_todays_demo_appointments() -> Result<()> {
    let app = Desktop::launch("demo-schedule").await?;
    let outcome = async {
        let banner = app
            .text_when("#demo-banner", "the demo banner", |t| {
                t.contains("DEMO DATA")
            })
            .await?;
        ensure!(
            banner.contains("not for clinical use"),
            "banner says {banner:?}"
        );
        let title = app.client.title().await?;
        ensure!(title == "Hearth", "window title is {title:?}");

        let expected = times_and_patients(&demo_visits()?);
        ensure!(
            expected.len() >= 20,
            "the demo day has only {} visits",
            expected.len()
        );
        let shown = rows(&app).await?;
        ensure!(
            shown == expected,
            "the window lists {} visits, the core {}; first shown {:?}, first expected {:?}",
            shown.len(),
            expected.len(),
            shown.first(),
            expected.first()
        );
        let summary = app
            .text_when("#schedule-summary", "the summary", |t| !t.is_empty())
            .await?;
        ensure!(
            summary.starts_with(&format!("{} visits", expected.len())),
            "{summary:?}"
        );
        let label = Local::now().format("%A %-d %B %Y").to_string();
        app.text_when("#schedule-date", "today's date over the schedule", |t| {
            t == label
        })
        .await?;
        let path = app.screenshot("schedule").await?;
        println!("screenshot: {}", path.display());
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selecting_an_appointment_shows_that_patient_in_the_chart() -> Result<()> {
    let app = Desktop::launch("demo-chart").await?;
    let outcome = async {
        let buttons = app
            .all(
                "#appointment-list button.appointment",
                "the appointment list",
            )
            .await?;
        ensure!(buttons.len() > 3, "only {} visits listed", buttons.len());
        // Two different patients in turn: the chart follows the selection.
        for button in [&buttons[3], &buttons[0]] {
            let patient = button.find(Locator::Css(".patient")).await?.text().await?;
            button.click().await?;
            app.text_when(
                "#chart-patient-name",
                "the chart to show the selected patient",
                |t| t == patient,
            )
            .await?;
            app.text_when(
                "#visit-patient",
                "the visit pane to show the patient",
                |t| t == patient,
            )
            .await?;
            // Names can repeat in a clinic: the chart must be this visit's patient, by id.
            let wanted = button.attr("data-patient-id").await?;
            let shown = app
                .client
                .find(Locator::Css("#patient-banner"))
                .await?
                .attr("data-patient-id")
                .await?;
            ensure!(
                shown.is_some() && shown == wanted,
                "the chart shows {shown:?}, the visit is {wanted:?}"
            );
            ensure!(
                button.attr("aria-pressed").await?.as_deref() == Some("true"),
                "the selected visit is not marked as selected"
            );
        }
        let banner = app
            .text_when("#patient-banner", "the banner", |t| t.contains("MRN"))
            .await?;
        ensure!(banner.contains("DOB"), "banner: {banner:?}");
        let trends = app
            .all("#region-chart svg.spark", "vital-sign trend lines")
            .await?;
        ensure!(!trends.is_empty(), "no vital-sign trends");
        let labs = app
            .all("#region-chart table.labs tbody tr", "lab rows")
            .await?;
        ensure!(!labs.is_empty(), "no labs");
        let path = app.screenshot("chart").await?;
        println!("screenshot: {}", path.display());
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyboard_alone_moves_between_the_three_regions() -> Result<()> {
    let app = Desktop::launch("keyboard").await?;
    let outcome = async {
        app.all(
            "#appointment-list button.appointment",
            "the appointment list",
        )
        .await?;
        let expect_region = |want: &'static str| {
            let app = &app;
            async move {
                hearth_e2e::wait_until(hearth_e2e::UI_TIMEOUT, want, || async {
                    Ok((app.focused_region().await?.as_deref() == Some(want)).then_some(()))
                })
                .await
            }
        };
        app.press(&[Key::F6]).await?;
        expect_region("region-schedule").await?;
        app.press(&[Key::F6]).await?;
        expect_region("region-chart").await?;
        app.press(&[Key::F6]).await?;
        expect_region("region-visit").await?;
        app.press(&[Key::F6]).await?;
        expect_region("region-schedule")
            .await
            .context("F6 wraps around")?;
        app.press(&[Key::Shift, Key::F6]).await?;
        expect_region("region-visit")
            .await
            .context("Shift+F6 goes back")?;
        app.press_char(&[Key::Alt], '2').await?;
        expect_region("region-chart")
            .await
            .context("Alt+2 jumps to the chart")?;
        app.press_char(&[Key::Alt], '1').await?;
        expect_region("region-schedule")
            .await
            .context("Alt+1 jumps to the schedule")?;

        // From the schedule, Tab reaches the clinician filter, then the first visit; Enter
        // opens that patient's chart.
        app.press(&[Key::Tab]).await?;
        app.press(&[Key::Tab]).await?;
        let focused = app.client.active_element().await?;
        let patient = focused
            .find(Locator::Css(".patient"))
            .await
            .context("Tab did not reach the first visit")?
            .text()
            .await?;
        app.press(&[Key::Enter]).await?;
        app.text_when("#chart-patient-name", "Enter to open the chart", |t| {
            t == patient
        })
        .await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_machine_configuration_is_shown_not_ignored() -> Result<()> {
    let spec = LaunchSpec {
        config: Some("[ehr]\nfhir_base_ur = \"https://ehr.example.org/fhir\"\n".into()),
        ..Default::default()
    };
    let app = Desktop::launch_with("bad-config", spec).await?;
    let outcome = async {
        let text = app
            .text_when("main.fatal", "the configuration error", |t| {
                t.contains("cannot start")
            })
            .await?;
        ensure!(
            text.contains("unknown field `fhir_base_ur`"),
            "the error does not name the key: {text:?}"
        );
        ensure!(
            app.client
                .find_optional(Locator::Css("#appointment-list"))
                .await?
                .is_none(),
            "a schedule is shown despite the broken configuration"
        );
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_a_clinicians_name_narrows_the_shared_view_to_their_day() -> Result<()> {
    let app = Desktop::launch("clinician-filter").await?;
    let outcome = async {
        let all = rows(&app).await?;
        let everyone = demo_visits()?;
        let chosen = everyone
            .iter()
            .find(|v| v.practitioner.starts_with("Priya"))
            .context("the demo clinic has no NP Priya Raman")?
            .clone();
        let theirs: Vec<Visit> = everyone
            .into_iter()
            .filter(|v| v.practitioner_id == chosen.practitioner_id)
            .collect();
        let expected = times_and_patients(&theirs);
        ensure!(
            !expected.is_empty() && expected.len() < all.len(),
            "nothing to narrow"
        );

        app.type_text("#practitioner-filter", "Priya").await?;
        hearth_e2e::wait_until(hearth_e2e::UI_TIMEOUT, "the schedule to narrow", || async {
            let shown = rows(&app).await?;
            Ok((shown == expected).then_some(()))
        })
        .await?;
        let names = app
            .client
            .find_all(Locator::Css("#appointment-list .practitioner"))
            .await?;
        for n in names {
            let text = n.text().await?;
            ensure!(
                text == chosen.practitioner,
                "a visit of {text} is still listed"
            );
        }
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

/// What the app writes when its window refuses to leave for another origin.
const REFUSED: &str = "the window refused to leave for another origin";

/// A loopback listener that counts the connections it gets (and answers none).
async fn counting_listener() -> Result<(
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    Ok((port, count, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_has_no_global_tauri_api_and_the_window_stays_on_hearths_own_pages() -> Result<()>
{
    let app = Desktop::launch("stays-home").await?;
    let (port, connections, listener) = counting_listener().await?;
    let outcome = async {
        // The app works: the status (pushed over the IPC channel) and the schedule (invoked).
        app.text_when("#demo-banner", "the demo banner", |t| {
            t.contains("DEMO DATA")
        })
        .await?;
        let before = rows(&app).await?;
        ensure!(!before.is_empty(), "no visits listed");

        // A script in the page finds no ready-made Tauri API.
        let global = app
            .client
            .execute("return typeof window.__TAURI__;", vec![])
            .await?;
        ensure!(global == "undefined", "window.__TAURI__ is {global}");

        // A marker that survives only while this very page stays.
        let home = app
            .client
            .execute(
                "window.__e2eStayed = 'here'; return window.location.href;",
                vec![],
            )
            .await?;
        ensure!(
            home.as_str()
                .is_some_and(|u| u.starts_with("tauri://localhost")),
            "the app's page is at {home}"
        );
        let elsewhere = format!("http://127.0.0.1:{port}/");
        app.client
            .execute(
                "window.open(arguments[0]); window.location = arguments[0]; return true;",
                vec![Value::String(elsewhere.clone())],
            )
            .await?;
        let log = app.client.log_path().to_path_buf();
        hearth_e2e::wait_until(
            hearth_e2e::UI_TIMEOUT,
            "the window to refuse the other origin",
            || async {
                let got = connections.load(std::sync::atomic::Ordering::SeqCst);
                ensure!(
                    got == 0,
                    "the window went to {elsewhere} ({got} connection(s))"
                );
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Ok(text.contains(REFUSED).then_some(()))
            },
        )
        .await?;

        // Still Hearth's page, the same one, working.
        let stayed = app
            .client
            .execute(
                "return [window.__e2eStayed || null, window.location.href];",
                vec![],
            )
            .await?;
        ensure!(
            stayed[0] == "here" && stayed[1] == home,
            "the page is not the one that was there ({home}): {stayed}"
        );
        let after = rows(&app).await?;
        ensure!(after == before, "the schedule changed: {after:?}");
        let got = connections.load(std::sync::atomic::Ordering::SeqCst);
        ensure!(got == 0, "the listener got {got} connection(s)");
        Ok(())
    }
    .await;
    listener.abort();
    app.finish(outcome).await
}
