journalctl --update-catalog >/dev/null 2>&1 || :
systemd-tmpfiles --create netsentry.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # First install: what %systemd_post does — the distribution's presets
    # decide whether the service is enabled; it is not started here (Fedora
    # and RHEL policy: the administrator starts it after configuring it).
    systemctl --no-reload preset netsentry.service >/dev/null 2>&1 || :
fi
