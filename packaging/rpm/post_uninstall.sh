journalctl --update-catalog >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
    # Upgrade: restart with the new binary.
    systemctl try-restart netsentry.service >/dev/null 2>&1 || :
fi
if [ "$1" -eq 0 ]; then
    # Erase: no stale metrics for node_exporter to serve.
    rm -f /var/lib/prometheus/node-exporter/netsentry.prom \
          /var/lib/node_exporter/textfile_collector/netsentry.prom
fi
