//! The real window signs in through the organisation's identity provider (npm oidc-provider as
//! a SMART authorization server) and reads the EHR (sekmet behind a gateway that admits only
//! tokens the provider calls active). Started by an EHR launch, it opens the patient the EHR
//! had open. The browser is a command that writes the sign-in URL down; the test plays the
//! browser with it (following redirects, filling the login form).

use anyhow::{anyhow, Context, Result};
use fantoccini::Locator;
use hearth_e2e::{wait_until, Desktop, LaunchSpec};
use hearth_testkit::smart::{browser_login, SmartEhr, USER_DISPLAY, USER_NAME, USER_PASSWORD};
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
        config: Some(format!(
            "[ehr]\nfhir_base_url = \"{}\"\n[identity]\nissuer = \"{}\"\nclient_id = \"hearth\"\n\
             browser = [\"sh\", \"-c\", \"printf '%s' \\\"$0\\\" > {f}.tmp && mv {f}.tmp {f}\", \"{{url}}\"]\n\
             [sync]\npoll_interval_seconds = 1\n",
            ehr.fhir_base,
            ehr.issuer,
            f = url_file.display(),
        )),
        args: vec!["--iss".into(), ehr.fhir_base.clone(), "--launch".into(), launch],
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

        app.client
            .find(Locator::Css("#sign-in-button"))
            .await?
            .click()
            .await?;
        // The "browser" got the authorization URL; play it.
        let url = wait_until(Duration::from_secs(30), "the browser to be opened", || {
            let url_file = url_file.clone();
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
        browser
            .await?
            .map_err(|e| anyhow!("the browser's sign-in failed: {e}"))?;

        // The user's name in the top bar, and the launch patient's chart, read from the EHR
        // with the user's token.
        app.text_when("#current-user", "the signed-in user's name", |t| {
            t == USER_DISPLAY
        })
        .await?;
        wait_until(
            Duration::from_secs(60),
            "the launch patient's chart",
            || async {
                let Ok(banner) = app.client.find(Locator::Css("#patient-banner")).await else {
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
