//! A patient's or guest's browser on the join page: headless Debian Chromium through
//! ChromeDriver, with every `RTCPeerConnection` the page makes wrapped so that the test reads
//! its `getStats`. Shared by the visit service's browser tests and the media engine's.

use super::wait_for;
use fantoccini::{Client, ClientBuilder, Locator};
use hearth_testkit::visit::ChromeDriver;
use serde_json::Value;
use std::time::Duration;

/// How long a browser step may take.
pub const WAIT: Duration = Duration::from_secs(45);

/// Wraps `RTCPeerConnection` so the test sees every connection the page makes.
pub const WRAP_PEER_CONNECTIONS: &str = r"
if (!window.__pcs) {
  const Original = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
}
return true;";

/// What `getStats` says about each connection the page made.
pub const STATS: &str = r"
const done = arguments[arguments.length - 1];
(async () => {
  const out = [];
  for (const pc of window.__pcs || []) {
    const report = await pc.getStats();
    const r = { state: pc.connectionState, framesDecoded: 0, bytesReceived: 0, inboundRtp: 0 };
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        r.inboundRtp += 1;
        r.bytesReceived += s.bytesReceived || 0;
        if (s.kind === 'video') r.framesDecoded += s.framesDecoded || 0;
      }
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = report.get(s.selectedCandidatePairId);
        const local = pair && report.get(pair.localCandidateId);
        const remote = pair && report.get(pair.remoteCandidateId);
        r.local = local && local.candidateType;
        r.remote = remote && remote.candidateType;
      }
    });
    out.push(r);
  }
  done(out);
})().catch((e) => done({ error: String(e) }));";

pub struct Browser {
    pub client: Client,
    pub name: &'static str,
}

impl Browser {
    pub async fn open(driver: &ChromeDriver, name: &'static str, url: &str) -> Self {
        Self::open_with(driver, name, url, &[]).await
    }

    /// A browser with extra Chromium flags (`extra`), e.g. the files its fake camera and
    /// microphone play.
    pub async fn open_with(
        driver: &ChromeDriver,
        name: &'static str,
        url: &str,
        extra: &[String],
    ) -> Self {
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(driver.capabilities_with(name, extra))
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("{name}: Chromium session: {e}"));
        client.goto(url).await.unwrap();
        client.execute(WRAP_PEER_CONNECTIONS, vec![]).await.unwrap();
        Self { client, name }
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    pub async fn state(&self) -> String {
        self.js("return document.body.dataset.state || ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn wait_state(&self, want: &str) {
        let what = format!("{} to reach state {want}", self.name);
        wait_for(WAIT, &what, || async {
            let s = self.state().await;
            (s == want).then_some(())
        })
        .await;
    }

    pub async fn join_as(&self, display: &str) {
        self.wait_state("lobby").await;
        self.client
            .find(Locator::Css("#name"))
            .await
            .unwrap()
            .send_keys(display)
            .await
            .unwrap();
        self.client
            .find(Locator::Css("#join-button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_state("waiting").await;
    }

    pub async fn stats(&self) -> Vec<Value> {
        let v = self.client.execute_async(STATS, vec![]).await.unwrap();
        v.as_array()
            .cloned()
            .unwrap_or_else(|| panic!("{}: stats: {v}", self.name))
    }

    /// Waits until some connection has decoded video frames from its peer; returns its stats.
    pub async fn decoding(&self) -> Value {
        let what = format!(
            "{} to decode video frames (getStats framesDecoded)",
            self.name
        );
        wait_for(WAIT, &what, || async {
            self.stats()
                .await
                .into_iter()
                .find(|s| s["framesDecoded"].as_u64().unwrap_or(0) > 0 && s["state"] == "connected")
        })
        .await
    }

    /// Waits until a connection made after the first `made` ones decodes video.
    pub async fn decoding_anew(&self, made: usize) -> Value {
        let what = format!("{} to decode video on a new connection", self.name);
        wait_for(WAIT, &what, || async {
            self.stats()
                .await
                .into_iter()
                .skip(made)
                .find(|s| s["framesDecoded"].as_u64().unwrap_or(0) > 0 && s["state"] == "connected")
        })
        .await
    }

    pub async fn axe(&self, axe_source: &str) -> Vec<String> {
        self.client.execute(axe_source, vec![]).await.unwrap();
        let script = r"
const done = arguments[arguments.length - 1];
axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } })
  .then((r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')) }))))
  .catch((e) => done([{ id: 'axe-error', impact: 'critical', nodes: [String(e)] }]));";
        let v = self.client.execute_async(script, vec![]).await.unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|x| matches!(x["impact"].as_str(), Some("serious" | "critical")))
            .map(|x| x.to_string())
            .collect()
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
