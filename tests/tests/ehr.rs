//! The window connected to a real EHR (sekmet-fhir on loopback, loaded with the Synthea
//! patients and today's schedule): it syncs into its encrypted store (key in a real Secret
//! Service), shows the EHR's schedule, and puts a conflicting change before the user with
//! both versions and a choice.

use anyhow::{ensure, Context, Result};
use fantoccini::Locator;
use hearth_e2e::{wait_until, Desktop, LaunchSpec};
use hearth_store::{Keychain, Method, OutboxWrite, Store};
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
async fn connected_to_an_ehr_the_window_syncs_its_schedule_and_resolves_a_conflict() -> Result<()> {
    let name = "connected_to_an_ehr_the_window_syncs_its_schedule_and_resolves_a_conflict";
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

        // A change based on a version the front desk has since replaced at the EHR.
        let appt = &clinic.appointments[0];
        let mut theirs: serde_json::Value =
            serde_json::from_str(&server.get_json(&format!("/fhir/Appointment/{appt}")))?;
        theirs["status"] = "cancelled".into();
        let (status, _) = server.request(
            "PUT",
            &format!("/fhir/Appointment/{appt}"),
            Some(&theirs.to_string()),
        )?;
        ensure!(status == 200, "the EHR refused the front desk's change");
        let front_desk: serde_json::Value =
            serde_json::from_str(&server.get_json(&format!("/fhir/Appointment/{appt}")))?;
        let mut mine = theirs.clone();
        mine["status"] = "arrived".into();
        let db = app.profile_dir().join("hearth.db");
        ensure!(db.exists(), "the app has no store at {}", db.display());
        let keychain = Keychain::new(
            hearth_core::KEYCHAIN_SERVICE,
            &format!("database-key:{}", db.display()),
        );
        let store = Store::open_with_keychain(&db, &keychain).context("the app's store")?;
        store.enqueue(
            &OutboxWrite {
                idempotency_key: "e2e-stale-write".into(),
                resource_type: "Appointment".into(),
                resource_id: Some(appt.clone()),
                method: Method::Update,
                if_match: Some("W/\"1\"".into()),
                body: Some(mine.to_string()),
            },
            "Practitioner/e2e-nurse",
        )?;
        wait_until(
            Duration::from_secs(20),
            "the engine to record the conflict",
            || async {
                let sum = store.outbox_summary()?;
                Ok((sum.conflicts == 1).then_some(()))
            },
        )
        .await
        .with_context(|| format!("outbox: {:?}", store.outbox_summary()))?;
        app.text_when("#sync-conflicts", "the top bar to show the conflict", |t| {
            t.contains("1 need you")
        })
        .await?;

        // The panel shows both versions side by side; the user keeps the EHR's.
        app.client
            .find(Locator::Css("#sync-button"))
            .await?
            .click()
            .await?;
        let row = app
            .text_when(".conflict .versions tbody", "the conflicting field", |t| {
                t.contains("status")
            })
            .await?;
        ensure!(
            row.contains("arrived") && row.contains("cancelled"),
            "versions shown: {row:?}"
        );
        app.client
            .find(Locator::Css(".conflict .take-theirs"))
            .await?
            .click()
            .await?;
        app.text_when("#sync-panel", "the conflict to be settled", |t| {
            // (headings are rendered in capitals)
            t.to_lowercase()
                .contains("changes that need your decision (0)")
        })
        .await?;
        // Once the sync has settled (nothing left to send, the change dropped), the EHR still
        // holds the front desk's version: same content, no newer version.
        wait_until(Duration::from_secs(20), "the sync to settle", || async {
            let sum = store.outbox_summary()?;
            Ok(
                (sum.pending == 0 && sum.conflicts == 0 && sum.failed == 0 && sum.discarded == 1)
                    .then_some(()),
            )
        })
        .await
        .with_context(|| format!("outbox: {:?}", store.outbox_summary()))?;
        let at_ehr: serde_json::Value =
            serde_json::from_str(&server.get_json(&format!("/fhir/Appointment/{appt}")))?;
        ensure!(
            at_ehr == front_desk,
            "the EHR's version was changed: status {}, version {} (the front desk's: {})",
            at_ehr["status"],
            at_ehr["meta"]["versionId"],
            front_desk["meta"]["versionId"]
        );
        app.client
            .find(Locator::Css("#sync-panel-close"))
            .await?
            .click()
            .await?;
        app.screenshot("ehr-synced").await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
