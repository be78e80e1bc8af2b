//! The visit note in Hearth's real window, against the real FHIR server (sekmet behind the
//! SMART peer's gateway) and the strict HL7 billing peer (hl7apy): written, signed, in the EHR
//! at once (the DocumentReference's text is what was typed), the Encounter finished, the chart
//! showing it, the charge accepted by billing. And a kill while typing loses at most what was
//! typed since the last pause.

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use fantoccini::Locator;
use hearth_e2e::{signon_config, wait_until, Desktop, LaunchSpec};
use hearth_testkit::billing::BillingPeer;
use hearth_testkit::smart::SmartEhr;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const CHILD: &str = "HEARTH_E2E_NOTE_CHILD";
const WAIT: Duration = Duration::from_secs(60);

/// The resources of a search at the FHIR server (directly, not through Hearth).
fn search(ehr: &SmartEhr, path: &str) -> Result<Vec<Value>> {
    let fhir = ehr.fhir.as_ref().context("the clinic's FHIR server")?;
    let text = tokio::task::block_in_place(|| fhir.get_json(path));
    let bundle: Value = serde_json::from_str(&text)?;
    Ok(bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .collect())
}

/// The patient of an appointment, as the FHIR server has it.
fn patient_of(ehr: &SmartEhr, appointment: &str) -> Result<String> {
    let found = search(ehr, &format!("/fhir/Appointment?_id={appointment}"))?;
    let appt = found.first().context("the appointment at the server")?;
    appt["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["actor"]["reference"].as_str())
        .find_map(|r| r.strip_prefix("Patient/"))
        .map(str::to_owned)
        .context("the appointment's patient")
}

/// Whether the server's Appointment is a virtual visit: R5 `virtualService` as its R4
/// cross-version extension, or a telemedicine appointment or service type.
fn is_virtual(ehr: &SmartEhr, appointment: &str) -> Result<bool> {
    let found = search(ehr, &format!("/fhir/Appointment?_id={appointment}"))?;
    let appt = found.first().context("the appointment at the server")?;
    let text = appt.to_string();
    Ok(text.contains("virtualService") || text.contains("448337001") || text.contains("\"VR\""))
}

/// Opens the visit of `appointment` from the schedule and waits for its note's draft.
async fn open_note(app: &Desktop, appointment: &str) -> Result<()> {
    let row = format!("[data-appointment-id='{appointment}']");
    wait_until(WAIT, "the appointment in the schedule", || async {
        app.client.find_optional(Locator::Css(&row)).await
    })
    .await?;
    app.click_in_view(&row).await?;
    wait_until(WAIT, "the note's editor", || async {
        let Some(pane) = app.client.find_optional(Locator::Css("#note-pane")).await? else {
            return Ok(None);
        };
        let state = pane.attr("data-state").await?;
        Ok(state.filter(|s| s != "loading"))
    })
    .await?;
    Ok(())
}

/// The last revision the core stored, from the saved indicator.
async fn saved_revision(app: &Desktop) -> Result<f64> {
    app.number_attr("#note-saved", "data-saved-revision").await
}

/// Picks the first option a code picker offers for `query`.
async fn pick(app: &Desktop, picker: &str, query: &str) -> Result<()> {
    app.type_text(&format!("#{picker}-search"), query).await?;
    let option = format!("#{picker}-option-0[data-code='{query}']");
    wait_until(WAIT, "the code search's answer", || async {
        app.client.find_optional(Locator::Css(&option)).await
    })
    .await?;
    app.click_in_view(&option).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_signed_in_the_window_is_in_the_ehr_at_once_and_its_charge_in_billing() -> Result<()>
{
    let name = "a_note_signed_in_the_window_is_in_the_ehr_at_once_and_its_charge_in_billing";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    let Some((ehr, clinic)) = SmartEhr::with_clinic(name) else {
        return Ok(());
    };
    let billing = tokio::task::spawn_blocking(|| BillingPeer::start(&[])).await?;
    let url_file = home.join("sign-in-url.txt");
    let appointment = clinic.appointments[0].clone();
    let patient = patient_of(&ehr, &appointment)?;
    // Only a clinician of the visit writes its note: the signed-in user is on it.
    ehr.add_participant(&appointment, hearth_testkit::smart::USER_FHIR);
    let spec = LaunchSpec {
        config: Some(signon_config(
            &ehr,
            &url_file,
            &format!(
                "[billing]\nmllp_address = \"{}\"\nsending_facility = \"CLINIC\"\n",
                billing.addr()
            ),
        )),
        ..LaunchSpec::default()
    };
    let app = Desktop::launch_with("note", spec).await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await?;
        open_note(&app, &appointment).await?;

        // What the clinician types, delimiters and a line break included.
        let (line1, line2) = (
            "Cough for 3 days, no fever.",
            "Sleeps badly | wakes ^ at 3 & coughs ~ \\ often.",
        );
        let subjective = format!("{line1}\n{line2}");
        let assessment = "Viral upper respiratory infection.";
        let plan = "Fluids, rest; call if short of breath.";
        // A line break is the Enter key (WebDriver types "\n" as nothing in WebKit).
        let enter = char::from(fantoccini::key::Key::Enter).to_string();
        app.type_text("#note-subjective", &format!("{line1}{enter}{line2}"))
            .await?;
        app.type_text("#note-assessment", assessment).await?;
        app.type_text("#note-plan", plan).await?;
        pick(&app, "note-dx", "J06.9").await?;
        pick(&app, "note-svc", "99213").await?;
        wait_until(WAIT, "the draft to be saved", || async {
            let status = match app
                .client
                .find_optional(Locator::Css("#note-saved"))
                .await?
            {
                Some(el) => el.attr("data-status").await?,
                None => None,
            };
            Ok(
                (status.as_deref() == Some("saved") && saved_revision(&app).await? >= 1.0)
                    .then_some(()),
            )
        })
        .await?;
        let dx_text = app
            .client
            .find(Locator::Css("#note-dx-chips li[data-code='J06.9']"))
            .await?
            .text()
            .await?;

        app.click_in_view("#note-attest").await?;
        app.click_in_view("#note-sign").await?;
        let signed = Instant::now();
        // At the FHIR server (asked directly, every 20 ms): the note as a DocumentReference.
        let doc = wait_until(WAIT, "the DocumentReference at the FHIR server", || async {
            let found = search(
                &ehr,
                &format!("/fhir/DocumentReference?subject=Patient/{patient}"),
            )?;
            Ok(found.into_iter().next())
        })
        .await?;
        let latency = signed.elapsed();
        println!(
            "signed in the window -> DocumentReference readable at the FHIR server: {latency:?}"
        );
        ensure!(
            doc["status"] == "current" && doc["docStatus"] == "final",
            "{doc}"
        );
        let data = doc["content"][0]["attachment"]["data"]
            .as_str()
            .context("the note's inline text")?;
        let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data)?)?;
        // The documented layout: each section under its heading, then diagnoses and services.
        // The chip: code, description, and its remove button (×).
        let description = dx_text
            .trim_start_matches("J06.9")
            .trim_end_matches(|c: char| c == '×' || c.is_whitespace())
            .trim();
        // Modifier 95 for a virtual visit (as the server's Appointment says), none in person.
        let service = if is_virtual(&ehr, &appointment)? {
            "99213-95"
        } else {
            "99213"
        };
        let expected = format!(
            "Subjective\n{subjective}\n\nAssessment\n{assessment}\n\nPlan\n{plan}\n\n\
             Diagnoses (ICD-10-CM)\nJ06.9 {description}\n\nServices\n{service}"
        );
        ensure!(
            text == expected,
            "the note's text at the EHR:\n{text}\n--- expected:\n{expected}\n--- appointment: {}",
            search(&ehr, &format!("/fhir/Appointment?_id={appointment}"))?[0]
        );
        ensure!(
            doc["author"][0]["reference"] == hearth_testkit::smart::USER_FHIR,
            "the author: {doc}"
        );

        // The Encounter is finished.
        let encounter = wait_until(WAIT, "the finished Encounter", || async {
            let found = search(
                &ehr,
                &format!("/fhir/Encounter?appointment=Appointment/{appointment}"),
            )?;
            Ok(found.into_iter().find(|e| e["status"] == "finished"))
        })
        .await?;
        ensure!(encounter["subject"]["reference"] == format!("Patient/{patient}").as_str());
        // One ChargeItem for the one service line.
        let items = wait_until(WAIT, "the ChargeItem", || async {
            let found = search(&ehr, &format!("/fhir/ChargeItem?subject=Patient/{patient}"))?;
            Ok((!found.is_empty()).then_some(found))
        })
        .await?;
        ensure!(
            items.len() == 1 && items[0]["code"]["coding"][0]["code"] == "99213",
            "{items:?}"
        );

        // The window: the signed version in the chart, the charge accepted by billing.
        wait_until(WAIT, "the note's version in the chart", || async {
            let Some(v) = app
                .client
                .find_optional(Locator::Css(
                    "#note-versions li.note-version[data-delivery='in_chart']",
                ))
                .await?
            else {
                return Ok(None);
            };
            v.attr("data-document-id").await
        })
        .await?;
        wait_until(WAIT, "the charge accepted by billing", || async {
            app.client
                .find_optional(Locator::Css(
                    "#note-charges li.charge[data-state='accepted']",
                ))
                .await
        })
        .await?;
        let received = tokio::task::block_in_place(|| billing.received());
        ensure!(
            received
                .iter()
                .filter(|r| r.ack == "AA" && !r.duplicate)
                .count()
                == 1,
            "one accepted DFT^P03 at billing: {}",
            received.len()
        );
        let doc_id = doc["id"].as_str().unwrap_or_default().to_owned();
        let chart_note = format!("#chart-notes li.chart-note[data-document-id='{doc_id}']");
        wait_until(WAIT, "the note in the chart's notes list", || async {
            app.client.find_optional(Locator::Css(&chart_note)).await
        })
        .await?;
        // A long note is folded: unfold it to read it whole.
        let toggle = format!("{chart_note} .note-toggle");
        if app
            .client
            .find_optional(Locator::Css(&toggle))
            .await?
            .is_some()
        {
            app.click_in_view(&toggle).await?;
        }
        let shown = app
            .client
            .find(Locator::Css(&chart_note))
            .await?
            .text()
            .await?;
        ensure!(
            shown.contains("Viral upper respiratory infection."),
            "{shown}"
        );
        app.screenshot("signed").await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

/// The app process whose command line names `profile` (the window the driver started).
fn app_pid(profile: &Path) -> Option<i32> {
    let app = hearth_e2e::app_binary().ok()?;
    let want = profile.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.first().map(Path::new) == Some(app.as_path()) && args.contains(&want)).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_typing_the_note_loses_at_most_what_followed_the_last_pause() -> Result<()> {
    let name = "killed_while_typing_the_note_loses_at_most_what_followed_the_last_pause";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    let Some((ehr, clinic)) = SmartEhr::with_clinic(name) else {
        return Ok(());
    };
    let url_file = home.join("sign-in-url.txt");
    let appointment = clinic.appointments[1].clone();
    ehr.add_participant(&appointment, hearth_testkit::smart::USER_FHIR);
    let profile = home.join("profile");
    let spec = || LaunchSpec {
        config: Some(signon_config(&ehr, &url_file, "")),
        profile: Some(profile.clone()),
        ..LaunchSpec::default()
    };
    let first = "Chest tightness on exertion since Monday.";
    let after_pause = " Worse on stairs; none at rest.";
    let app = Desktop::launch_with("note-kill", spec()).await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await?;
        open_note(&app, &appointment).await?;
        app.type_text("#note-subjective", first).await?;
        // The pause: the editor saves what was typed.
        wait_until(WAIT, "the first part to be saved", || async {
            Ok((saved_revision(&app).await? >= 1.0).then_some(()))
        })
        .await?;
        app.type_text("#note-subjective", after_pause).await?;
        // Killed before the next pause's save can be sure to have happened.
        let pid = app_pid(&profile).context("the app's process")?;
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -KILL {pid}");
        Ok(())
    }
    .await;
    let _ = app.finish(outcome.clone_err()).await;
    outcome?;

    // Started again on the same profile: the draft holds the text up to the last pause.
    let _ = std::fs::remove_file(&url_file);
    let app = Desktop::launch_with("note-kill-again", spec()).await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await?;
        open_note(&app, &appointment).await?;
        let kept = app
            .client
            .find(Locator::Css("#note-subjective"))
            .await?
            .prop("value")
            .await?
            .unwrap_or_default();
        let whole = format!("{first}{after_pause}");
        ensure!(
            kept.starts_with(first) && whole.starts_with(&kept),
            "kept {kept:?}: not the text up to the last pause (or beyond it) of {whole:?}"
        );
        println!(
            "after the kill the draft kept {} of {} characters",
            kept.len(),
            whole.len()
        );
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

/// `Result<()>` whose error is cloned as text (the session is closed whatever happened).
trait CloneErr {
    fn clone_err(&self) -> Result<()>;
}

impl CloneErr for Result<()> {
    fn clone_err(&self) -> Result<()> {
        match self {
            Ok(()) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        }
    }
}

/// Demo mode (no EHR, no billing): a note is written and signed on a demo visit, shows in the
/// chart as kept on this computer, and its charge is kept, not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_signs_a_note_kept_on_this_computer() -> Result<()> {
    let app = Desktop::launch("note-demo").await?;
    let outcome = async {
        app.open_a_virtual_visit().await?;
        wait_until(WAIT, "the note's draft", || async {
            let Some(pane) = app.client.find_optional(Locator::Css("#note-pane")).await? else {
                return Ok(None);
            };
            Ok((pane.attr("data-state").await?.as_deref() == Some("draft")).then_some(()))
        })
        .await?;
        app.type_text("#note-assessment", "Demo: seasonal allergies.")
            .await?;
        pick(&app, "note-dx", "J06.9").await?;
        pick(&app, "note-svc", "98005").await?;
        app.click_in_view("#note-attest").await?;
        app.click_in_view("#note-sign").await?;
        wait_until(WAIT, "the note signed", || async {
            let pane = app.client.find(Locator::Css("#note-pane")).await?;
            Ok((pane.attr("data-state").await?.as_deref() == Some("signed")).then_some(()))
        })
        .await?;
        wait_until(WAIT, "the charge kept, not sent", || async {
            app.client
                .find_optional(Locator::Css(
                    "#note-charges li.charge[data-state='not_sent']",
                ))
                .await
        })
        .await?;
        app.text_when("#chart-notes .chart-note", "the note in the chart", |t| {
            t.contains("kept on this computer only")
        })
        .await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

/// Signed with the EHR and billing out of reach, the app killed, both back, the app started
/// again: exactly one DocumentReference, one ChargeItem for the one service, and one DFT at
/// billing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_offline_killed_and_restarted_the_note_and_charge_arrive_once() -> Result<()> {
    let name = "signed_offline_killed_and_restarted_the_note_and_charge_arrive_once";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    let Some((ehr, clinic, link)) = SmartEhr::with_clinic_behind_link(name) else {
        return Ok(());
    };
    let mut billing = tokio::task::spawn_blocking(|| BillingPeer::start(&[])).await?;
    let url_file = home.join("sign-in-url.txt");
    let appointment = clinic.appointments[2].clone();
    let patient = patient_of(&ehr, &appointment)?;
    ehr.add_participant(&appointment, hearth_testkit::smart::USER_FHIR);
    let profile = home.join("profile");
    let config = signon_config(
        &ehr,
        &url_file,
        &format!("[billing]\nmllp_address = \"{}\"\n", billing.addr()),
    );
    let spec = || LaunchSpec {
        config: Some(config.clone()),
        profile: Some(profile.clone()),
        ..LaunchSpec::default()
    };
    let app = Desktop::launch_with("note-offline", spec()).await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await?;
        open_note(&app, &appointment).await?;
        // Out of reach: the EHR (its link cut) and billing (stopped).
        link.set_cut(true);
        tokio::task::block_in_place(|| billing.stop());
        app.type_text("#note-assessment", "Signed while offline.")
            .await?;
        pick(&app, "note-dx", "J06.9").await?;
        pick(&app, "note-svc", "99213").await?;
        app.click_in_view("#note-attest").await?;
        app.click_in_view("#note-sign").await?;
        wait_until(WAIT, "the signed version, queued", || async {
            app.client
                .find_optional(Locator::Css(
                    "#note-versions li.note-version[data-delivery='queued']",
                ))
                .await
        })
        .await?;
        let pid = app_pid(&profile).context("the app's process")?;
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -KILL {pid}");
        Ok(())
    }
    .await;
    let _ = app.finish(outcome.clone_err()).await;
    outcome?;
    ensure!(
        search(
            &ehr,
            &format!("/fhir/DocumentReference?subject=Patient/{patient}")
        )?
        .is_empty(),
        "nothing reached the EHR while it was out of reach"
    );

    // Both back; the app again, on the same profile.
    link.set_cut(false);
    tokio::task::block_in_place(|| billing.resume());
    let _ = std::fs::remove_file(&url_file);
    let app = Desktop::launch_with("note-offline-again", spec()).await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await?;
        open_note(&app, &appointment).await?;
        wait_until(
            WAIT,
            "the note in the EHR's chart and its charge accepted",
            || async {
                let in_chart = app
                    .client
                    .find_optional(Locator::Css(
                        "#note-versions li.note-version[data-delivery='in_chart']",
                    ))
                    .await?
                    .is_some();
                let accepted = app
                    .client
                    .find_optional(Locator::Css(
                        "#note-charges li.charge[data-state='accepted']",
                    ))
                    .await?
                    .is_some();
                Ok((in_chart && accepted).then_some(()))
            },
        )
        .await?;
        let docs = search(
            &ehr,
            &format!("/fhir/DocumentReference?subject=Patient/{patient}"),
        )?;
        ensure!(docs.len() == 1, "one DocumentReference: {}", docs.len());
        let items = search(&ehr, &format!("/fhir/ChargeItem?subject=Patient/{patient}"))?;
        ensure!(items.len() == 1, "one ChargeItem: {}", items.len());
        let received = tokio::task::block_in_place(|| billing.received());
        let accepted: Vec<_> = received
            .iter()
            .filter(|r| r.ack == "AA" && !r.duplicate)
            .collect();
        ensure!(accepted.len() == 1, "one DFT accepted: {}", received.len());
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
