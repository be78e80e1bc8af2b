//! The window connected to a real EHR (sekmet-fhir on loopback, loaded with the Synthea
//! patients and today's schedule): it syncs into its encrypted store (key in a real Secret
//! Service) and shows the EHR's schedule; a change the user makes in the window that another
//! client beat to the EHR comes back as a conflict in the sync panel, both versions side by
//! side, and the user's choice is what the EHR ends up holding.

use anyhow::{anyhow, ensure, Context, Result};
use fantoccini::Locator;
use hearth_e2e::{wait_until, Desktop, LaunchSpec};
use hearth_testkit::smart::SmartEhr;
use serde_json::Value;
use std::time::Duration;

const CHILD: &str = "HEARTH_E2E_EHR_CHILD";

fn patient_name(server: &hearth_testkit::FhirServer, id: &str) -> Result<String> {
    let p: serde_json::Value =
        serde_json::from_str(&server.get_json(&format!("/fhir/Patient/{id}")))?;
    let name = &p["name"][0];
    let given = name["given"][0].as_str().unwrap_or_default();
    let family = name["family"].as_str().unwrap_or_default();
    Ok(format!("{given} {family}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_to_an_ehr_the_window_syncs_its_schedule() -> Result<()> {
    let name = "connected_to_an_ehr_the_window_syncs_its_schedule";
    // Its own session bus with an unlocked GNOME Keyring: the store's key lives there.
    if hearth_testkit::isolated(CHILD, name, true).is_none() {
        return Ok(());
    }
    let Some((server, clinic)) = hearth_testkit::clinic::server_with_clinic(name) else {
        return Ok(());
    };
    let spec = LaunchSpec {
        config: Some(format!(
            "[ehr]\nfhir_base_url = \"{}\"\n\n[sync]\npoll_interval_seconds = 1\n",
            server.base_url
        )),
        ..Default::default()
    };
    let app = Desktop::launch_with("ehr-sync", spec).await?;
    let outcome = async {
        // Start-up includes the first download (keychain, new database, six patients).
        wait_until(
            hearth_e2e::STARTUP_TIMEOUT,
            "the top bar to say online and synced",
            || async {
                let Some(el) = app
                    .client
                    .find_optional(Locator::Css("#sync-state"))
                    .await?
                else {
                    return Ok(None);
                };
                let text = el.text().await?;
                Ok((text.contains("Online") && text.contains("last sync")).then_some(()))
            },
        )
        .await?;
        // The EHR's schedule for today, with its patients' names.
        let mut expected = Vec::new();
        for id in &clinic.patients[..6] {
            expected.push(patient_name(&server, id)?);
        }
        let shown = wait_until(Duration::from_secs(20), "the EHR's six visits", || async {
            let names = app
                .client
                .find_all(Locator::Css("#appointment-list .patient"))
                .await?;
            let mut out = Vec::new();
            for n in names {
                out.push(n.text().await?);
            }
            Ok((out.len() == 6).then_some(out))
        })
        .await?;
        ensure!(
            shown == expected,
            "schedule {shown:?}, expected {expected:?}"
        );

        app.screenshot("ehr-synced").await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

/// The EHR's current copy of a resource (read at the FHIR server, behind the gateway).
fn at_ehr(server: &hearth_testkit::FhirServer, path: &str) -> Result<Value> {
    Ok(serde_json::from_str(&tokio::task::block_in_place(|| {
        server.get_json(path)
    }))?)
}

/// The join link `appt` carries in its R5 `virtualService` (the R4 cross-version extension).
fn join_link(appt: &Value) -> Option<String> {
    appt["extension"]
        .as_array()?
        .iter()
        .filter(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("extension-Appointment.virtualService"))
        })
        .flat_map(|e| e["extension"].as_array().cloned().unwrap_or_default())
        .find(|p| p["url"] == "addressUrl")
        .and_then(|p| p["valueUrl"].as_str().map(str::to_owned))
}

/// The version number of a resource as the EHR counts them.
fn version(r: &Value) -> Result<u64> {
    r["meta"]["versionId"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no numeric meta.versionId in {}", r["meta"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_in_the_window_that_another_client_beat_is_put_to_the_user() -> Result<()> {
    let name = "a_change_made_in_the_window_that_another_client_beat_is_put_to_the_user";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    // The EHR (sign-on required), its FHIR server behind a link this test can cut.
    let Some((ehr, clinic, link)) = SmartEhr::with_clinic_behind_link(name) else {
        return Ok(());
    };
    let server = ehr.fhir.as_ref().context("the clinic's FHIR server")?;
    // The one change the window makes to an Appointment: a virtual visit's join link, put
    // into the Appointment when IT asks for it ([visit] link_to_appointment). The window has
    // no action that changes an appointment's status.
    let url_file = home.join("sign-in-url.txt");
    // The second of the clinic's appointments is virtual.
    let appt = clinic.appointments[1].clone();
    // The visit service, trusting the provider's tokens for itself; the clinician is on the
    // appointment at the EHR.
    let (_service, spec) = hearth_e2e::with_visit_service(&ehr, &url_file, &[&appt]).await?;
    let path = format!("/fhir/Appointment/{appt}");
    let app = Desktop::launch_with("ehr-conflict", spec).await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await?;
        let row = format!("[data-appointment-id='{appt}']");
        let button = wait_until(
            hearth_e2e::STARTUP_TIMEOUT,
            "the virtual visit in the synced schedule",
            || async { app.client.find_optional(Locator::Css(&row)).await },
        )
        .await?;
        // What the window holds: the EHR's copy as it synced it.
        let synced = at_ehr(server, &path)?;
        // The clinician opens the visit's waiting room while the EHR is in reach: the visit
        // service checks with the EHR that they are on the appointment (and keeps the answer
        // for a minute, in which the link below is made).
        button.click().await?;
        app.text_when("#room-heading", "the virtual waiting room", |t| {
            t.to_lowercase().contains("waiting room")
        })
        .await?;
        app.text_when("#room-empty", "the room live at the visit service", |t| {
            t.contains("Nobody")
        })
        .await?;

        // The EHR goes out of the window's reach; meanwhile the front desk notes something on
        // the appointment at the EHR.
        link.set_cut(true);
        let note = "Patient called: running 10 minutes late";
        let mut theirs = synced.clone();
        theirs["comment"] = note.into();
        let (status, body) = tokio::task::block_in_place(|| {
            server.request("PUT", &path, Some(&theirs.to_string()))
        })?;
        ensure!(
            status == 200,
            "the EHR refused the front desk's change: {body}"
        );
        let front_desk = at_ehr(server, &path)?;
        ensure!(
            version(&front_desk)? == version(&synced)? + 1,
            "the front desk's change is not the next version"
        );

        // The clinician, on the copy the window holds, makes the patient's join link, which
        // Hearth puts into the appointment: saved here and queued for the EHR.
        app.client
            .find(Locator::Css("#invite-patient"))
            .await?
            .click()
            .await?;
        let link_url = wait_until(hearth_e2e::UI_TIMEOUT, "the join link", || async {
            let Some(input) = app
                .client
                .find_optional(Locator::Css("#invite-link"))
                .await?
            else {
                return Ok(None);
            };
            Ok(input.prop("value").await?.filter(|v| v.contains("/join#")))
        })
        .await?;
        app.text_when(
            "#invite-saved",
            "the note that the link is in the appointment",
            |t| t.contains("appointment"),
        )
        .await?;
        app.text_when("#sync-state", "the change queued in the top bar", |t| {
            t.contains("1 queued")
        })
        .await?;

        // The EHR is back: the change goes out on the version the window had, which the EHR
        // no longer holds (412), and comes back to the user as a conflict.
        link.set_cut(false);
        app.text_when("#sync-conflicts", "the top bar to show the conflict", |t| {
            t.contains("1 need you")
        })
        .await?;
        app.client
            .find(Locator::Css("#sync-button"))
            .await?
            .click()
            .await?;
        let rows = app
            .text_when(".conflict .versions tbody", "the conflicting fields", |t| {
                t.contains("comment")
            })
            .await?;
        ensure!(
            rows.contains(note) && rows.contains(&link_url),
            "versions shown: {rows:?}"
        );
        // Still nothing of the window's at the EHR.
        ensure!(
            at_ehr(server, &path)? == front_desk,
            "the EHR's version was changed before the user chose"
        );

        // The user sends their version.
        app.client
            .find(Locator::Css(".conflict .keep-mine"))
            .await?
            .click()
            .await?;
        app.text_when("#sync-panel", "the conflict to be settled", |t| {
            // (headings are rendered in capitals)
            t.to_lowercase()
                .contains("changes that need your decision (0)")
        })
        .await?;
        // The EHR holds the window's version, made on the front desk's: the next version,
        // with the join link the window showed, and the rest as the window had it (the
        // front desk's note is what the user chose to replace).
        let sent = wait_until(
            Duration::from_secs(30),
            "the user's version at the EHR",
            || async {
                let now = at_ehr(server, &path)?;
                Ok((join_link(&now).as_deref() == Some(link_url.as_str())).then_some(now))
            },
        )
        .await?;
        ensure!(
            version(&sent)? == version(&front_desk)? + 1,
            "the user's version is not the one after the front desk's: {} after {}",
            sent["meta"]["versionId"],
            front_desk["meta"]["versionId"]
        );
        ensure!(
            sent["comment"] == synced["comment"],
            "comment at the EHR {}, the window's copy had {}",
            sent["comment"],
            synced["comment"]
        );
        for field in ["status", "start", "end", "participant"] {
            ensure!(
                sent[field] == synced[field],
                "{field} at the EHR changed: {} (was {})",
                sent[field],
                synced[field]
            );
        }
        // And the window settles: nothing queued, nothing waiting for the user.
        app.text_when("#sync-state", "the top bar to show nothing queued", |t| {
            t.contains("0 queued") && !t.contains("need you")
        })
        .await?;
        ensure!(
            at_ehr(server, &path)? == sent,
            "the EHR's version changed again after the sync settled"
        );
        app.client
            .find(Locator::Css("#sync-panel-close"))
            .await?
            .click()
            .await?;
        app.screenshot("ehr-conflict-settled").await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
