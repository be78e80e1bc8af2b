//! The window is told what changes instead of asking on a timer (issue 10, acceptance 4),
//! against the real FHIR server (sekmet, loaded with the Synthea patients and today's
//! schedule):
//! - during the first download the top bar's progress bar moves (every value the page showed
//!   is recorded in the page by a MutationObserver the test adds);
//! - over 30 s of idle in EHR mode the page makes no calls at all: the test wraps the page's
//!   calls into the shell (WebDriver execute-script; nothing in the app is there for the test)
//!   and counts;
//! - a change at the EHR still reaches the screen within the poll interval (plus the round's
//!   own time).

use anyhow::{bail, ensure, Context, Result};
use fantoccini::Locator;
use hearth_e2e::{wait_until, Desktop, LaunchSpec};
use std::time::{Duration, Instant};

const CHILD: &str = "HEARTH_E2E_PUSH_CHILD";
/// The sync engine's poll interval in this test's configuration.
const POLL: Duration = Duration::from_secs(4);
/// What one round and the window's redraw may add to the poll interval.
const ROUND_ALLOWANCE: Duration = Duration::from_secs(2);
/// The idle time over which no call may be made.
const IDLE: Duration = Duration::from_secs(30);

/// Records every value of the top bar's progress bar from now on, in the page.
const WATCH_PROGRESS: &str = r#"
    window.__e2eProgress = [];
    const note = () => {
        const bar = document.getElementById('sync-progress');
        if (!bar) return;
        const seen = window.__e2eProgress;
        const value = [Number(bar.getAttribute('value')), Number(bar.getAttribute('max'))];
        const last = seen[seen.length - 1];
        if (!last || last[0] !== value[0] || last[1] !== value[1]) seen.push(value);
    };
    new MutationObserver(note).observe(document.body,
        { subtree: true, childList: true, attributes: true, characterData: true });
    note();
    return true;
"#;

/// Counts the page's calls into the shell: every `invoke` (the UI's bridge calls Tauri's
/// `window.__TAURI_INTERNALS__.invoke`, which cannot be replaced) is a `fetch` of
/// `ipc://localhost/<command>`; the page's `fetch` is wrapped so each one's command name is
/// recorded.
const COUNT_CALLS: &str = r#"
    window.__e2eCalls = [];
    const original = window.fetch;
    const counted = function (input, init) {
        const url = String((input && input.url) || input);
        if (url.startsWith('ipc:')) {
            window.__e2eCalls.push(decodeURIComponent(url.split('/').pop()));
        }
        return original.call(window, input, init);
    };
    window.fetch = counted;
    return window.fetch === counted;
"#;

fn patient_name(server: &hearth_testkit::FhirServer, id: &str) -> Result<String> {
    let p: serde_json::Value =
        serde_json::from_str(&server.get_json(&format!("/fhir/Patient/{id}")))?;
    let name = &p["name"][0];
    let given = name["given"][0].as_str().unwrap_or_default();
    let family = name["family"].as_str().unwrap_or_default();
    Ok(format!("{given} {family}"))
}

async fn calls(app: &Desktop) -> Result<Vec<String>> {
    let v = app
        .client
        .execute("return window.__e2eCalls || null;", vec![])
        .await?;
    serde_json::from_value::<Option<Vec<String>>>(v)?
        .context("the call counter is gone (the page reloaded?)")
}

async fn schedule_names(app: &Desktop) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for n in app
        .client
        .find_all(Locator::Css("#appointment-list .patient"))
        .await?
    {
        out.push(n.text().await?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_is_pushed_status_and_changes_and_makes_no_timed_calls_when_idle() -> Result<()>
{
    let name = "the_window_is_pushed_status_and_changes_and_makes_no_timed_calls_when_idle";
    if hearth_testkit::isolated(CHILD, name, true).is_none() {
        return Ok(());
    }
    // The app reaches the EHR through a link that stays cut until the test watches the page,
    // so the first download happens while it looks.
    let link = hearth_testkit::Proxy::reserve();
    link.set_cut(true);
    let Some((server, clinic)) =
        hearth_testkit::clinic::server_with_clinic_at(name, Some(link.port))
    else {
        return Ok(());
    };
    link.forward_to(server.port);
    let spec = LaunchSpec {
        config: Some(format!(
            "[ehr]\nfhir_base_url = \"{}\"\n\n[sync]\npoll_interval_seconds = {}\n",
            server.base_url,
            POLL.as_secs()
        )),
        ..Default::default()
    };
    let app = Desktop::launch_with("push", spec).await?;
    let outcome = async {
        // The page is up (the top bar says it cannot reach the EHR yet).
        app.text_when("#sync-state", "the top bar", |t| t.contains("Offline"))
            .await?;
        let installed = app.client.execute(WATCH_PROGRESS, vec![]).await?;
        ensure!(installed == true, "the progress recorder was not installed");

        // The first download, watched.
        link.set_cut(false);
        wait_until(
            hearth_e2e::STARTUP_TIMEOUT,
            "the top bar to say online and synced",
            || async {
                let Ok(el) = app.client.find(Locator::Css("#sync-state")).await else {
                    return Ok(None);
                };
                let text = el.text().await?;
                Ok((text.contains("Online") && text.contains("last sync")).then_some(()))
            },
        )
        .await?;
        let seen: Vec<(u32, u32)> = serde_json::from_value(
            app.client
                .execute("return window.__e2eProgress;", vec![])
                .await?,
        )?;
        eprintln!("progress values the window showed: {seen:?}");
        // The patients' records: one step per patient of the schedule.
        let patients: std::collections::BTreeSet<&String> = clinic.patients[..6].iter().collect();
        let total = u32::try_from(patients.len())?;
        let steps: Vec<u32> = seen
            .iter()
            .filter(|(_, max)| *max == total)
            .map(|(done, _)| *done)
            .collect();
        ensure!(
            steps.windows(2).all(|w| w[0] < w[1]),
            "the progress went backwards: {seen:?}"
        );
        ensure!(
            steps.len() >= 3,
            "the progress bar did not move while the records came (saw {seen:?})"
        );

        // The schedule is the EHR's.
        let first = &clinic.patients[0];
        let expected = patient_name(&server, first)?;
        wait_until(Duration::from_secs(20), "the EHR's six visits", || async {
            let names = schedule_names(&app).await?;
            Ok((names.len() == 6 && names.contains(&expected)).then_some(()))
        })
        .await?;

        // Count the page's calls, and prove the count sees them: opening a visit's chart is
        // one call.
        let wrapped = app.client.execute(COUNT_CALLS, vec![]).await?;
        ensure!(wrapped == true, "the page's calls could not be counted");
        let row = format!(
            "[data-appointment-id='{}']",
            clinic.appointments.first().context("no appointment")?
        );
        app.client.find(Locator::Css(&row)).await?.click().await?;
        wait_until(
            Duration::from_secs(20),
            "the chart call to be counted",
            || async {
                Ok(calls(&app)
                    .await?
                    .iter()
                    .any(|c| c == "open_chart")
                    .then_some(()))
            },
        )
        .await?;
        app.text_when("#region-chart", "the chart of the selected visit", |t| {
            t.contains(&expected)
        })
        .await?;

        // Idle: over 30 s (several sync rounds), no call at all, so none to the status.
        app.client
            .execute("window.__e2eCalls.length = 0; return true;", vec![])
            .await?;
        let idle_from = Instant::now();
        while idle_from.elapsed() < IDLE {
            let made = calls(&app).await?;
            if !made.is_empty() {
                bail!(
                    "the idle window made {} call(s) within {:?}: {made:?}",
                    made.len(),
                    idle_from.elapsed()
                );
            }
            // The observation's sampling step (the window is what is measured), not a wait
            // for something to happen.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let made = calls(&app).await?;
        ensure!(
            made.is_empty(),
            "over {IDLE:?} of idle the page made these calls: {made:?}"
        );
        // ...while the top bar kept following the rounds (pushed).
        let bar = app
            .text_when("#sync-state", "the top bar", |_| true)
            .await?;
        ensure!(bar.contains("Online"), "top bar: {bar:?}");

        // A change at the EHR (another client renames the patient) reaches the schedule
        // within the poll interval, plus one round's own time.
        let mut patient: serde_json::Value =
            serde_json::from_str(&server.get_json(&format!("/fhir/Patient/{first}")))?;
        patient["name"][0]["family"] = "Pushwell".into();
        let (status, _) = server.request(
            "PUT",
            &format!("/fhir/Patient/{first}"),
            Some(&patient.to_string()),
        )?;
        let changed_at = Instant::now();
        ensure!(status == 200, "the EHR refused the change ({status})");
        let renamed = patient_name(&server, first)?;
        ensure!(renamed != expected, "the rename did not take at the EHR");
        let bound = POLL + ROUND_ALLOWANCE;
        wait_until(bound, "the EHR's change on the screen", || async {
            Ok(schedule_names(&app).await?.contains(&renamed).then_some(()))
        })
        .await
        .with_context(|| format!("not within {bound:?} of the change"))?;
        eprintln!(
            "EHR change → screen: {:?} (poll interval {POLL:?})",
            changed_at.elapsed()
        );
        // The page asked for the schedule because it was told something changed, and never for
        // the status.
        let made = calls(&app).await?;
        ensure!(
            made.iter()
                .all(|c| c != "app_status" && c != "watch_status"),
            "status calls: {made:?}"
        );
        app.screenshot("pushed").await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
