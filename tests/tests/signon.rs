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
        ..LaunchSpec::default()
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

/// The window's "Hearth cannot start" page, once it shows, and its text.
async fn refusal(app: &Desktop) -> Result<String> {
    let text = app
        .text_when("main.fatal", "the refusal to start", |t| {
            t.contains("Hearth cannot start")
        })
        .await?;
    for behind in ["#region-schedule", "#sign-in"] {
        anyhow::ensure!(
            app.client.find_all(Locator::Css(behind)).await?.is_empty(),
            "{behind} is rendered although Hearth refused to start: {text}"
        );
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_without_sign_in_cannot_open_a_profile_made_with_it() -> Result<()> {
    let name = "a_configuration_without_sign_in_cannot_open_a_profile_made_with_it";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    let ehr = SmartEhr::start();
    let url_file = home.join("sign-in-url.txt");
    let profile = home.join("profile");
    let signed_in = signon_config(&ehr, &url_file, "");

    // The profile is made with sign-in, and the clinician signs in.
    let app = Desktop::launch_with(
        "bound-profile-made",
        LaunchSpec {
            config: Some(signed_in.clone()),
            profile: Some(profile.clone()),
            ..LaunchSpec::default()
        },
    )
    .await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await
    }
    .await;
    app.finish(outcome).await?;

    // The attack: the same EHR (on loopback, which the configuration rule alone lets run
    // without sign-on) and no [identity], over that profile. Refused: the window says why,
    // and neither a view nor the sign-in screen is behind it.
    let weak = format!("[ehr]\nfhir_base_url = \"{}\"\n", ehr.fhir_base);
    let app = Desktop::launch_with(
        "bound-profile-refused",
        LaunchSpec {
            config: Some(weak.clone()),
            profile: Some(profile.clone()),
            ..LaunchSpec::default()
        },
    )
    .await?;
    let outcome = async {
        let text = refusal(&app).await?;
        anyhow::ensure!(
            text.contains("identity.issuer")
                && text.contains("none (no sign-in)")
                && text.contains(&profile.display().to_string()),
            "the refusal does not say what differs: {text}"
        );
        app.screenshot("refused").await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await?;

    // The same configuration given by the user over a machine that signs in is refused
    // even for a new profile: a user's configuration cannot weaken the machine's.
    let app = Desktop::launch_with(
        "weaker-than-machine",
        LaunchSpec {
            config: Some(weak),
            machine_config: Some(signed_in),
            ..LaunchSpec::default()
        },
    )
    .await?;
    let outcome = async {
        let text = refusal(&app).await?;
        anyhow::ensure!(
            text.contains("would weaken the machine-wide one")
                && text.contains("`[identity]` is required"),
            "{text}"
        );
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_shows_in_the_window_at_once() -> Result<()> {
    let name = "a_failed_renewal_shows_in_the_window_at_once";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return Ok(());
    };
    // Access tokens of 8 s: the window renews about every 4 s.
    let ehr = SmartEhr::start_with_access_ttl(8);
    let url_file = home.join("sign-in-url.txt");
    let app = Desktop::launch_with(
        "renewal-failed",
        LaunchSpec {
            config: Some(signon_config(&ehr, &url_file, "")),
            ..LaunchSpec::default()
        },
    )
    .await?;
    let outcome = async {
        app.text_when("#sign-in h1", "the sign-in screen", |t| {
            t.contains("Sign in")
        })
        .await?;
        app.sign_in_at(&url_file).await?;
        // The provider's answer to the next renewal is rejected (a spoilt ID token): the
        // window says the sign-in has ended and offers to sign in again, and the top bar
        // no longer says "Online".
        ehr.spoil_next_id_token("signature");
        app.text_when("#sign-in-expired h1", "the sign-in-again screen", |t| {
            t.contains("Your sign-in has ended")
        })
        .await?;
        let state = app
            .text_when("#sync-state", "the top bar's state", |t| !t.is_empty())
            .await?;
        anyhow::ensure!(
            state.contains("Not synchronising") && !state.contains("Online"),
            "the top bar says {state:?}"
        );
        anyhow::ensure!(
            app.client
                .find_all(Locator::Css("#region-schedule"))
                .await?
                .is_empty(),
            "the schedule is still rendered"
        );
        app.screenshot("renewal-failed").await?;
        // Signing in again brings the window back.
        std::fs::remove_file(&url_file)?;
        app.sign_in_at(&url_file).await?;
        app.all("#region-schedule", "the schedule after signing in again")
            .await?;
        Ok(())
    }
    .await;
    app.finish(outcome).await
}
