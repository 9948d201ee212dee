if [ "$1" -eq 0 ]; then
    # Removal (not upgrade): stop and disable the service.
    systemctl --no-reload disable --now netsentry.service >/dev/null 2>&1 || :
fi
