//! A virtual visit from the clinician's window: signed in at the identity provider, Hearth asks
//! the visit service (a real hearth-visit on loopback) for the patient's join link, shows the
//! patient in the virtual waiting room as soon as they join (and the schedule says so), and
//! admits them with one click.

use anyhow::{anyhow, ensure, Context, Result};
use fantoccini::Locator;
use futures_util::{SinkExt, StreamExt};
use hearth_e2e::{wait_until, Desktop};
use hearth_testkit::smart::SmartEhr;
use hearth_visit_protocol::{ClientMsg, Secret, ServerMsg};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const CHILD: &str = "HEARTH_E2E_VISIT_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clinician_invites_sees_the_patient_waiting_and_admits_them() -> Result<()> {
    let name = "the_clinician_invites_sees_the_patient_waiting_and_admits_them";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    let Some((ehr, clinic)) = SmartEhr::with_clinic(name) else {
        return Ok(());
    };
    let url_file = home.join("sign-in-url.txt");
    // The second of the clinic's appointments is virtual.
    let appointment = clinic.appointments[1].clone();
    // The visit service, trusting the provider's tokens for itself; the clinician is on the
    // appointment at the EHR.
    let (service, spec) = hearth_e2e::with_visit_service(&ehr, &url_file, &[&appointment]).await?;
    let port = service.addr.port();
    let app = Desktop::launch_with("visit", spec).await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await?;
        let row = format!("[data-appointment-id='{appointment}']");
        let button = wait_until(
            Duration::from_secs(60),
            "the virtual visit in the schedule",
            || async { app.client.find_optional(Locator::Css(&row)).await },
        )
        .await?;
        button.click().await?;
        app.text_when("#room-heading", "the virtual waiting room", |t| {
            t.to_lowercase().contains("waiting room")
        })
        .await?;

        // A join link for the patient, from the visit service.
        app.client
            .find(Locator::Css("#invite-patient"))
            .await?
            .click()
            .await?;
        let link = wait_until(Duration::from_secs(20), "the join link", || async {
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
        ensure!(
            link.starts_with(&format!("http://127.0.0.1:{port}/join#")),
            "link {link}"
        );
        // ...which Hearth also put into the Appointment at the EHR, for its reminders.
        app.text_when(
            "#invite-saved",
            "the note that the link is in the appointment",
            |t| t.contains("appointment"),
        )
        .await?;
        let fhir = ehr.fhir.as_ref().context("the clinic's FHIR server")?;
        let path = format!("/fhir/Appointment/{appointment}");
        wait_until(
            Duration::from_secs(30),
            "the join link in the EHR's Appointment",
            || async {
                let text = tokio::task::block_in_place(|| fhir.get_json(&path));
                let appt: serde_json::Value = serde_json::from_str(&text)?;
                let address = appt["extension"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| {
                        e["url"]
                            .as_str()
                            .is_some_and(|u| u.ends_with("extension-Appointment.virtualService"))
                    })
                    .flat_map(|e| e["extension"].as_array().cloned().unwrap_or_default())
                    .find(|p| p["url"] == "addressUrl")
                    .and_then(|p| p["valueUrl"].as_str().map(str::to_owned));
                Ok((address.as_deref() == Some(link.as_str())).then_some(()))
            },
        )
        .await?;

        // The patient opens it (a protocol client standing in for the join page).
        let token = Secret::new(link.split_once('#').context("token")?.1);
        let (mut patient, _) = tokio::time::timeout(
            hearth_e2e::UI_TIMEOUT,
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/ws")),
        )
        .await
        .context("the visit service did not take the patient's connection")??;
        let join = ClientMsg::Join {
            token,
            name: "Ana Lopez".into(),
            visit: None,
        };
        tokio::time::timeout(
            hearth_e2e::UI_TIMEOUT,
            patient.send(Message::Text(serde_json::to_string(&join)?.into())),
        )
        .await
        .context("the patient's join message was not taken")??;

        // Hearth shows them waiting, in the pane and in the schedule.
        app.text_when(
            "#room-waiting .room-name",
            "the patient in the waiting room",
            |t| t == "Ana Lopez",
        )
        .await?;
        app.text_when(
            &format!("{row} .badges"),
            "the schedule's waiting-room badge",
            |t| t.contains("In waiting room"),
        )
        .await?;
        app.screenshot("patient-waiting").await?;

        // One click admits them; the patient hears so.
        app.client
            .find(Locator::Css(".admit-button"))
            .await?
            .click()
            .await?;
        let admitted = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(Message::Text(t))) = patient.next().await {
                if matches!(serde_json::from_str(&t)?, ServerMsg::Admitted { .. }) {
                    return Ok::<_, anyhow::Error>(true);
                }
            }
            Ok(false)
        })
        .await
        .map_err(|_| anyhow!("the patient was not admitted within 20 s"))??;
        ensure!(
            admitted,
            "the patient's connection closed before being admitted"
        );
        app.text_when("#room-inside .room-name", "the patient in the visit", |t| {
            t == "Ana Lopez"
        })
        .await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
