if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
    # Upgrade: restart with the new binary.
    systemctl try-restart netsentry.service >/dev/null 2>&1 || :
fi
