//! The alerting rules shipped in packaging/prometheus: valid for Prometheus
//! and passing their own unit tests, with Debian's `promtool`.

use std::process::Command;

fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("promtool")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/prometheus"))
        .args(args)
        .output()
        .ok()?;
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    ))
}

#[test]
fn the_alerting_rules_check_and_pass_their_unit_tests() {
    let Some((ok, out)) = promtool(&["check", "rules", "netsentry.rules.yml"]) else {
        assert!(
            std::env::var("NETSENTRY_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
            "promtool is missing (apt-get install prometheus)"
        );
        eprintln!("skipped: needs promtool (apt-get install prometheus)");
        return;
    };
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "netsentry.rules.test.yml"]).unwrap();
    assert!(ok, "{out}");
}
