//! The real window signs in through the organisation's identity provider (npm oidc-provider as
//! a SMART authorization server) and reads the EHR (sekmet behind a gateway that admits only
//! tokens the provider calls active). Started by an EHR launch, it opens the patient the EHR
//! had open. The browser is a command that writes the sign-in URL down; the test plays the
//! browser with it (following redirects, filling the login form).

use anyhow::Result;
use fantoccini::Locator;
use hearth_e2e::{signon_config, wait_until, Desktop, LaunchSpec};
use hearth_testkit::smart::SmartEhr;
use std::time::Duration;

const CHILD: &str = "HEARTH_E2E_SIGNON_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ehr_launch_signs_in_through_the_provider_and_opens_the_patients_chart() -> Result<()> {
    let name = "an_ehr_launch_signs_in_through_the_provider_and_opens_the_patients_chart";
    // Its own session bus with an unlocked GNOME Keyring: the refresh token and the store's
    // key live there.
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    let Some((ehr, clinic)) = SmartEhr::with_clinic(name) else {
        return Ok(());
    };
    let patient = clinic.patients[0].clone();
    let launch = ehr.register_launch(&patient, None);
    let url_file = home.join("sign-in-url.txt");
    let spec = LaunchSpec {
        config: Some(signon_config(&ehr, &url_file, "")),
        args: vec![
            "--iss".into(),
            ehr.fhir_base.clone(),
            "--launch".into(),
            launch,
        ],
    };
    let app = Desktop::launch_with("signon", spec).await?;
    let outcome = async {
        // Signed out: the sign-in screen, and nothing clinical behind it.
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        let regions = app
            .client
            .find_all(Locator::Css("#region-schedule"))
            .await?;
        anyhow::ensure!(
            regions.is_empty(),
            "the schedule is rendered behind the sign-in screen"
        );

        // Sign in at the provider (the test plays the browser the window opened); the
        // user's name shows in the top bar. Then the launch patient's chart, read from the
        // EHR with the user's token.
        app.sign_in_at(&url_file).await?;
        wait_until(
            Duration::from_secs(60),
            "the launch patient's chart",
            || async {
                let Some(banner) = app
                    .client
                    .find_optional(Locator::Css("#patient-banner"))
                    .await?
                else {
                    return Ok(None);
                };
                let id = banner.attr("data-patient-id").await?;
                Ok((id.as_deref() == Some(patient.as_str())).then_some(()))
            },
        )
        .await?;
        let name = app
            .text_when("#chart-patient-name", "the patient's name", |t| {
                !t.is_empty()
            })
            .await?;
        anyhow::ensure!(!name.is_empty());
        app.screenshot("signed-in").await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
