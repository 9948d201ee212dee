//! A receiver URL that carries a token (Slack, Mattermost, Teams put it in the
//! path or query) is shown nowhere: not in the log, the metrics, `status`, or
//! the alerts. The receiver still gets every alert at the whole URL.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn webhook_tokens_appear_nowhere_but_in_the_config() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let secret_url = format!("{}/T0PSECRET-path?token=S3CRET-query", receiver.url());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("url = \"{}\"", receiver.url()),
        &format!("url = \"{secret_url}\""),
    );
    std::fs::write(&config, text).unwrap();
    let textfile = lab.path("netsentry.prom");
    append_config(
        &config,
        &format!(
            "\n[metrics]\ntextfile = \"{}\"\ninterval = \"1s\"\n",
            textfile.display()
        ),
    );
    // The receiver fails first: failures are logged and kept for `status`.
    receiver.set_status(500);
    let log = lab.path("agent.log");
    let mut agent = Agent::start(&lab.host, &config, &log);
    agent.wait_for_log("webhook delivery failed", 1);
    std::thread::sleep(Duration::from_millis(2500)); // a metrics tick or two
    let (code, status_text, err) =
        netsentry_in(&lab.host, &["status", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, status_json, err) = netsentry_in(
        &lab.host,
        &["status", "--json", "-c", config.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    let shown = format!("http://127.0.0.1:{}/…", receiver.port);
    assert!(
        metrics.contains(&format!(
            "netsentry_spool_pending_alerts{{receiver=\"{shown}\"}}"
        )),
        "{metrics}"
    );
    assert!(status_text.contains(&shown), "{status_text}");
    // Delivery works again: the alert arrives at the whole URL.
    receiver.set_status(200);
    let got = receiver.wait_for("agent_started", Duration::from_secs(15), |b| {
        b["kind"] == "agent_started"
    });
    assert_eq!(got.path, "/hook/T0PSECRET-path?token=S3CRET-query");
    agent.stop();
    let log_text = agent.log_text();
    let alerts: Vec<String> = receiver.all().iter().map(|r| r.body.to_string()).collect();
    for (place, text) in [
        ("log", &log_text),
        ("metrics", &metrics),
        ("status", &status_text),
        ("status --json", &status_json),
        ("alerts", &alerts.join("\n")),
    ] {
        assert!(
            !text.contains("T0PSECRET") && !text.contains("S3CRET"),
            "the token shows in the {place}:\n{text}"
        );
    }
    assert!(log_text.contains("webhook delivery failed"), "{log_text}");
}
