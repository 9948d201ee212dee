systemd-tmpfiles --create netsentry.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # First install: enable (and start) the service.
    systemctl enable netsentry.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start netsentry.service >/dev/null 2>&1 || :
    fi
fi
