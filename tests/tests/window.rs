//! The Hearth window, end to end: the real binary under Xvfb, driven through WebDriver.

use anyhow::{ensure, Context, Result};
use fantoccini::Locator;
use hearth_e2e::{Desktop, Key, LaunchSpec};

/// The visits the core lists for today on the default demo data, as (time, patient) pairs.
fn expected_demo_schedule() -> Result<Vec<(String, String)>> {
    Ok(demo_day(&[])?
        .appointments
        .into_iter()
        .map(|a| (a.start_label, a.patient_name))
        .collect())
}

/// Today's demo day as the core computes it, for some clinicians (none: everyone).
fn demo_day(practitioner_ids: &[String]) -> Result<hearth_ipc::ScheduleDay> {
    let dir = tempfile::tempdir()?;
    let options = hearth_core::launch::LaunchOptions {
        config_path: dir.path().join("absent.toml"),
        ..Default::default()
    };
    let ws = hearth_core::Workstation::start(
        &options,
        std::sync::Arc::new(hearth_core::clock::SystemClock),
    );
    Ok(ws.schedule(&hearth_ipc::ScheduleRequest {
        date: None,
        practitioner_ids: practitioner_ids.to_vec(),
    })?)
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

        let expected = expected_demo_schedule()?;
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
        let label = demo_day(&[])?.date_label;
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
                .find(Locator::Css("#appointment-list"))
                .await
                .is_err(),
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
        let everyone = demo_day(&[])?;
        let chosen = everyone
            .practitioners
            .iter()
            .find(|p| p.display_name.starts_with("Priya"))
            .context("the demo clinic has no NP Priya Raman")?;
        let expected: Vec<(String, String)> =
            demo_day(std::slice::from_ref(&chosen.practitioner_id))?
                .appointments
                .into_iter()
                .map(|a| (a.start_label, a.patient_name))
                .collect();
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
                text == chosen.display_name,
                "a visit of {text} is still listed"
            );
        }
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
