//! `netsentry import-arpwatch`: a switch from arpwatch keeps its station
//! list, so the agent does not announce every known station again.

use std::path::Path;

/// `netsentry import-arpwatch`: arpwatch's stations merged into the station
/// table in state_dir (stations already known stay as they are).
pub fn command(
    config: &crate::config::Config,
    file: &Path,
    interface: Option<&str>,
) -> Result<String, String> {
    use crate::detect::stations::{StationTable, parse_arp_dat};
    let text =
        crate::files::read_regular_text(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (found, bad) = parse_arp_dat(&text, interface);
    if found.is_empty() {
        return Err(format!(
            "{}: no station read ({bad} lines skipped){}",
            file.display(),
            match interface {
                None => "; if its lines name no interface, give --interface",
                Some(_) => "",
            }
        ));
    }
    let dir = &config.agent.state_dir;
    crate::agent::setup::prepare_state_dir(dir).map_err(|e| format!("{e:#}"))?;
    let cap = config.arp.max_stations;
    let (mut table, damaged) = match crate::state::read_text(dir, crate::state::STATIONS_FILE) {
        Some(t) => StationTable::from_text(&t, cap),
        None => (StationTable::new(cap), 0),
    };
    let before = table.len();
    let mut added = 0;
    for (iface, ip, station) in found.iter().cloned() {
        added += usize::from(table.add_if_new(&iface, ip, station));
    }
    crate::state::write_text(dir, crate::state::STATIONS_FILE, &table.to_text())
        .map_err(|e| e.to_string())?;
    // Run as root for the service: the file must stay the service user's.
    if let Ok(owner) = std::fs::metadata(dir) {
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(crate::state::STATIONS_FILE);
        let _ = std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()));
    }
    Ok(format!(
        "{added} stations imported from {} into {} ({} already known, {bad} lines skipped{}); {} stations now. Start the agent afterwards (a running one overwrites the table).\n",
        file.display(),
        dir.join(crate::state::STATIONS_FILE).display(),
        found.len() - added,
        match damaged {
            0 => String::new(),
            n => format!(", {n} damaged rows of the old table dropped"),
        },
        before + added
    ))
}
